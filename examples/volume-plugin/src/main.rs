//! Sample Docker volume plugin (filled by issue 5). Refuses to run until then.

fn main() {
    std::process::exit(2)
}
