//! The systems `trove bench` can load: a Trove cluster through the SDK, and (with the
//! `etcd` cargo feature, off by default) an etcd cluster through the `etcd-client` crate,
//! so both run the same closed-loop workloads from the same load generator.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::ValueEnum;
use trove_client::{Client, ClientConfig, Consistency, TroveError};

use crate::args::GlobalArgs;

/// Which system the workload runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// A Trove cluster (`--endpoints`, or the one `--local` starts).
    Trove,
    /// An etcd v3 cluster at `--endpoints` (records only; needs the `etcd` cargo feature).
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Trove => "trove",
            System::Etcd => "etcd",
        }
    }
}

/// Outcome of a compare-and-set: the new revision, or the revision found instead.
pub enum Cas {
    Written(u64),
    Conflict,
}

/// One worker's connection to the system under test.
pub enum Driver {
    Trove(Client),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::Client>),
}

impl Driver {
    /// A new connection (each worker has its own, as separate clients would).
    pub async fn connect(
        system: System,
        global: &GlobalArgs,
        endpoints: &[String],
    ) -> Result<Self> {
        match system {
            System::Trove => {
                let mut cfg = ClientConfig::new(endpoints.iter().cloned());
                cfg.request_timeout = global.timeout;
                cfg.retry_budget = global.retry_budget;
                Ok(Driver::Trove(Client::new(cfg).context("--endpoints")?))
            }
            #[cfg(feature = "etcd")]
            System::Etcd => {
                let leader = etcd::leader_endpoint(endpoints).await?;
                let c = etcd_client::Client::connect([leader], None)
                    .await
                    .context("connecting to etcd")?;
                Ok(Driver::Etcd(Box::new(c)))
            }
            #[cfg(not(feature = "etcd"))]
            System::Etcd => bail!(
                "this trove was built without the etcd driver; build it with \
                 `cargo build --release -p trove-cli --features etcd` (needs protoc)"
            ),
        }
    }

    /// The Trove client, for the object workloads.
    pub fn trove(&self) -> Result<&Client> {
        match self {
            Driver::Trove(c) => Ok(c),
            #[cfg(feature = "etcd")]
            Driver::Etcd(_) => bail!("the object workloads run against Trove only"),
        }
    }

    pub async fn put(&mut self, key: &str, value: &Bytes) -> Result<()> {
        match self {
            Driver::Trove(c) => {
                c.put_record(key, value.clone(), None).await?;
            }
            #[cfg(feature = "etcd")]
            Driver::Etcd(c) => {
                c.put(key, value.to_vec(), None).await?;
            }
        }
        Ok(())
    }

    /// Reads a record; returns its value's length and its revision. `linearizable` false
    /// reads the contacted node's own state (etcd: a serializable read).
    pub async fn get(&mut self, key: &str, linearizable: bool) -> Result<(usize, u64)> {
        match self {
            Driver::Trove(c) => {
                let consistency = if linearizable {
                    Consistency::Linearizable
                } else {
                    Consistency::Local
                };
                match c.get_record(key, consistency).await {
                    Ok(r) => Ok((r.value.len(), r.revision)),
                    Err(TroveError::NotFound(_)) => Ok((0, 0)),
                    Err(e) => Err(e.into()),
                }
            }
            #[cfg(feature = "etcd")]
            Driver::Etcd(c) => {
                let opts =
                    (!linearizable).then(|| etcd_client::GetOptions::new().with_serializable());
                let r = c.get(key, opts).await?;
                Ok(r.kvs()
                    .first()
                    .map_or((0, 0), |kv| (kv.value().len(), kv.mod_revision() as u64)))
            }
        }
    }

    /// Writes `value` only if the record's revision is `expected` (0: absent).
    pub async fn cas(&mut self, key: &str, value: &Bytes, expected: u64) -> Result<Cas> {
        match self {
            Driver::Trove(c) => match c.put_record(key, value.clone(), Some(expected)).await {
                Ok(rev) => Ok(Cas::Written(rev)),
                Err(TroveError::FailedPrecondition { .. }) => Ok(Cas::Conflict),
                Err(e) => Err(e.into()),
            },
            #[cfg(feature = "etcd")]
            Driver::Etcd(c) => {
                use etcd_client::{Compare, CompareOp, Txn, TxnOp};
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key,
                        CompareOp::Equal,
                        expected as i64,
                    )])
                    .and_then([TxnOp::put(key, value.to_vec(), None)]);
                let r = c.txn(txn).await?;
                if !r.succeeded() {
                    return Ok(Cas::Conflict);
                }
                let rev = r.header().map_or(0, |h| h.revision()) as u64;
                Ok(Cas::Written(rev))
            }
        }
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use anyhow::{Result, bail};

    /// The endpoint of the current etcd leader: the reference figures load the leader
    /// directly, as Trove's SDK does.
    pub async fn leader_endpoint(endpoints: &[String]) -> Result<String> {
        for ep in endpoints {
            let Ok(mut c) = etcd_client::Client::connect([ep.as_str()], None).await else {
                continue;
            };
            let Ok(st) = c.status().await else { continue };
            let me = st.header().map(|h| h.member_id());
            if Some(st.leader()) == me {
                return Ok(ep.clone());
            }
        }
        bail!(
            "no etcd leader among {} (is the cluster up and healthy?)",
            endpoints.join(",")
        )
    }
}
