//! plugind-manager: the plugin lifecycle, where the leaf crates meet.
//!
//! Main types and modules:
//! - [`layer`]: `docker plugin create` tars into a layer blob, and safe unpacking of layers;
//! - [`events`]: [`events::EventHub`], the in-process broadcast of plugin events with history;
//! - [`backoff`]: the restart policy for plugins that exit unexpectedly;
//! - [`client`]: [`client::PluginClient`], the Docker plugin protocol over a plugin's socket.

#![warn(missing_docs)]

pub mod backoff;
pub mod client;
pub mod events;
pub mod layer;
