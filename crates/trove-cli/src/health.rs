//! `trove health`: asks one node's `grpc.health.v1.Health` service whether it serves.
//! Exit 0 if SERVING, 1 otherwise; made for container healthchecks (a scratch image has
//! no shell or curl) and scripts.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::args::HealthArgs;

pub async fn run(a: HealthArgs, timeout: Duration) -> Result<()> {
    let url = format!("http://{}", a.endpoint);
    let channel = tonic::transport::Endpoint::from_shared(url)
        .with_context(|| format!("bad --endpoint {:?}", a.endpoint))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", a.endpoint))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: a.service.clone(),
        })
        .await
        .map_err(|st| anyhow::anyhow!("{} answered {:?}: {}", a.endpoint, st.code(), st.message()))?
        .into_inner();
    let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        println!("{}: SERVING", a.endpoint);
        Ok(())
    } else {
        bail!("{}: {}", a.endpoint, status.as_str_name())
    }
}
