//! The fleet stream on NATS JetStream: one stream, `STRATA_FLEET`, on the
//! subject `strata.fleet.changes`, file storage, no limits (the fleet state
//! is the fold of the whole stream). Publishers append with
//! `Nats-Expected-Last-Sequence`, so each envelope's version is the sequence
//! it lands at; every node reads the stream in order from the position it
//! saved last ([`super::Fleet::receive`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use prometheus_client::metrics::gauge::Gauge;

use super::change::{seal, Change, Envelope, FleetSecret, SIGNATURE_HEADER};
use super::Fleet;

pub const STREAM: &str = "STRATA_FLEET";
pub const SUBJECT: &str = "strata.fleet.changes";

type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct Engine {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    secret: FleetSecret,
    issuer: String,
}

impl Engine {
    /// A client that connects (and reconnects) in the background; only a
    /// malformed address fails here.
    pub async fn connect(
        url: &str,
        secret: FleetSecret,
        issuer: String,
        connected: Arc<AtomicBool>,
        gauge: Gauge,
    ) -> Result<Engine, Error> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("strata {issuer}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((100 * attempt as u64).clamp(100, 2000))
            })
            .event_callback(move |event| {
                let connected = connected.clone();
                let gauge = gauge.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected.store(true, Ordering::Relaxed);
                            gauge.set(1);
                            tracing::info!("fleet: connected to NATS");
                        }
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            connected.store(false, Ordering::Relaxed);
                            gauge.set(0);
                            tracing::warn!(
                                "fleet: disconnected from NATS; serving the last known fleet state"
                            );
                        }
                        other => tracing::debug!(event = %other, "fleet: NATS event"),
                    }
                }
            })
            .connect(url)
            .await?;
        Ok(Engine::over(client, secret, issuer))
    }

    fn over(client: async_nats::Client, secret: FleetSecret, issuer: String) -> Engine {
        // Requests fail after 3 s rather than wait for a reconnect, so the
        // API can answer 503 while NATS is away.
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .build(client.clone());
        Engine {
            client,
            jetstream,
            secret,
            issuer,
        }
    }

    /// A client for `strata ctl`: connects now or fails.
    pub async fn connect_now(url: &str, secret: FleetSecret) -> Result<Engine, Error> {
        let client = async_nats::ConnectOptions::new()
            .name("strata ctl")
            .connection_timeout(Duration::from_secs(3))
            .connect(url)
            .await?;
        Ok(Engine::over(client, secret, "ctl".into()))
    }

    pub async fn stream(&self) -> Result<stream::Stream, Error> {
        Ok(self
            .jetstream
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                storage: stream::StorageType::File,
                description: Some("Strata fleet changes (signed envelopes)".into()),
                ..Default::default()
            })
            .await?)
    }

    /// Sign `change` for the next place in the stream and append it there;
    /// the version (stream sequence) it got.
    pub async fn publish(&self, change: &Change) -> Result<u64, Error> {
        self.publish_raw_with(|version| Envelope {
            version,
            issuer: self.issuer.clone(),
            change: change.clone(),
        })
        .await
    }

    async fn publish_raw_with(&self, envelope: impl Fn(u64) -> Envelope) -> Result<u64, Error> {
        let mut stream = self.stream().await?;
        for _ in 0..20 {
            let last = stream.info().await?.state.last_sequence;
            let (payload, signature) = seal(&self.secret, &envelope(last + 1));
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .header(SIGNATURE_HEADER, signature.as_str())
                .expected_last_sequence(last);
            let ack = self.jetstream.send_publish(SUBJECT, message).await?.await;
            match ack {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    continue; // another publisher got there first: sign for the next place
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err("the stream kept moving under 20 attempts to append".into())
    }

    /// The stream's last sequence: the newest fleet state version.
    pub async fn last_version(&self) -> Result<u64, Error> {
        Ok(self.stream().await?.info().await?.state.last_sequence)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Read the stream forever: from the saved position, in order, through
/// engine outages (each failure starts over from where the node is).
pub async fn follow(fleet: Arc<Fleet>) {
    let mut failures = 0u32;
    loop {
        match follow_once(&fleet).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::warn!(error = %e, failures, "fleet: reading the stream failed; retrying");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn follow_once(fleet: &Fleet) -> Result<(), Error> {
    let engine = fleet.engine().ok_or("no engine")?;
    let mut stream = engine.stream().await?;
    let info = stream.info().await?.state.clone();
    let cursor = fleet.cursor_now().await;
    if cursor > info.last_sequence {
        fleet.rewind(info.last_sequence).await;
    } else if info.messages > 0 && info.first_sequence > cursor + 1 {
        fleet.missed_changes(info.first_sequence).await;
    }
    let cursor = fleet.cursor_now().await;
    if cursor >= info.last_sequence {
        fleet.set_caught_up();
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: SUBJECT.into(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: cursor + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let sequence = message.info()?.stream_sequence;
        let signature = message
            .headers
            .as_ref()
            .and_then(|h| h.get(SIGNATURE_HEADER))
            .map(|v| v.as_str().to_owned());
        fleet
            .receive(sequence, &message.payload, signature.as_deref())
            .await;
        if sequence >= info.last_sequence {
            fleet.set_caught_up();
        }
    }
    Err("the stream's consumer ended".into())
}
