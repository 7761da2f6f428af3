//! The channel host port: what the dispatch pass needs of whatever carries
//! a message on a channel. The plugin host (`adapters::plugins`) implements
//! it; the pass sees only deliveries and their errors, which say whether a
//! retry may help.

use relance_plugin_api::DeliverRequest;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A delivery's future, boxed so that the pass can hold any host behind
/// one pointer.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Delivers follow-ups on named channels.
pub trait ChannelHost: Send + Sync {
    /// Delivers one follow-up on `channel`. Boxed so that the pass can hold
    /// any host behind one pointer; one allocation a call is nothing next
    /// to the send itself.
    fn deliver<'a>(
        &'a self,
        channel: &'a str,
        request: &'a DeliverRequest,
    ) -> BoxFuture<'a, Result<Delivery, DeliveryError>>;

    /// Delivers several follow-ups on `channel` in one call to its plugin
    /// when the plugin takes batches, one by one otherwise: one result per
    /// request, in order.
    fn deliver_batch<'a>(
        &'a self,
        channel: &'a str,
        requests: &'a [DeliverRequest],
    ) -> BoxFuture<'a, Vec<Result<Delivery, DeliveryError>>>;

    /// How many follow-ups one call to `channel` may carry: 1 when its
    /// plugin takes them one at a time.
    fn batch_size(&self, channel: &str) -> usize;

    /// The channels whose settings were refused at start, with why: their
    /// sends wait without spending attempts.
    fn unconfigured(&self) -> BTreeMap<String, String>;
}

/// How a delivery ended, for the outbox.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    Ok {
        /// What the remote side created (Message-ID, task id …).
        remote_id: Option<String>,
        data: Option<serde_json::Value>,
    },
    /// Try again, not before `retry_after` when the remote side said so.
    Retryable {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// Retrying cannot help; `disable_endpoint` when the remote side asked
    /// never to be called again.
    Permanent {
        reason: String,
        disable_endpoint: bool,
    },
}

/// The host could not get an answer from the plugin. [`is_transient`]
/// tells the outbox whether to retry.
///
/// [`is_transient`]: DeliveryError::is_transient
#[derive(Clone, Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no channel `{channel}`")]
    UnknownChannel { channel: String },
    /// The channel's plugin refused its settings at start: its sends wait
    /// until the settings are given (and the configuration reloaded).
    #[error("{reason}")]
    Unconfigured { channel: String, reason: String },
    #[error("channel `{channel}`: the plugin refused its settings: {message}")]
    Misconfigured { channel: String, message: String },
    #[error("channel `{channel}` is unhealthy ({reason}); next restart in {retry_after:?}")]
    Unavailable {
        channel: String,
        reason: String,
        retry_after: Duration,
    },
    #[error("channel `{channel}`: its queue of {bound} calls is full")]
    QueueFull { channel: String, bound: usize },
    #[error("channel `{channel}`: no answer within {after:?}{}", if *.hung { " (plugin hung; restarting it)" } else { "" })]
    Timeout {
        channel: String,
        after: Duration,
        hung: bool,
    },
    #[error("channel `{channel}`: plugin fault ({fault}); restarting it")]
    PluginFault { channel: String, fault: String },
    #[error("channel `{channel}`: the plugin rejected the request: {message}")]
    Rejected { channel: String, message: String },
}

impl DeliveryError {
    /// Whether the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            DeliveryError::UnknownChannel { .. }
                | DeliveryError::Misconfigured { .. }
                | DeliveryError::Rejected { .. }
        )
    }

    /// When known, how long to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}
