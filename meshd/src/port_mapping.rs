//! Port mapping: meshd asks the home router to forward its WireGuard port, with PCP, then
//! NAT-PMP (both through crab_nat), then UPnP-IGD (igd-next); renews the mapping at half its
//! lifetime, removes it on shutdown, and reports the mapped public address, which the
//! lighthouses hand peers as a candidate. Behind a symmetric NAT that maps on request, peers
//! then reach this node directly instead of through a relay. `[wireguard] port_mapping =
//! false` turns it off.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

/// The lifetime asked for; the router may give less (PCP's servers often cap it).
const LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// The shortest wait before renewing, whatever lifetime the router gave.
const MIN_RENEW: Duration = Duration::from_secs(30);
/// How long one attempt at each protocol may take before the next is tried.
const ATTEMPT: Duration = Duration::from_secs(3);
/// After every protocol failed (most networks map nothing), when to ask again.
const RETRY: Duration = Duration::from_secs(300);
/// How long removing the mapping may hold up shutdown.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);
const DESCRIPTION: &str = "rma-mesh meshd (WireGuard)";

/// The background task that holds the mapping, and its mapped address.
#[derive(Debug)]
pub struct PortMapper {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl PortMapper {
    /// Starts mapping UDP `port`; the mapped address (or `None` while there is none) is sent
    /// on `mapped`.
    pub fn start(port: u16, mapped: watch::Sender<Option<SocketAddrV4>>) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(hold(port, mapped, stopped));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Removes the mapping from the router (a moment at most) and ends the task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(REMOVE_TIMEOUT + Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
    }
}

/// A mapping held on the router.
enum Mapping {
    /// PCP or NAT-PMP.
    Pmp(crab_nat::PortMapping),
    Upnp {
        gateway: igd_next::aio::Gateway<igd_next::aio::tokio::Tokio>,
        external_port: u16,
        local: SocketAddr,
    },
}

impl Mapping {
    fn protocol(&self) -> &'static str {
        match self {
            Self::Pmp(m) => match m.mapping_type() {
                crab_nat::PortMappingType::NatPmp => "NAT-PMP",
                crab_nat::PortMappingType::Pcp { .. } => "PCP",
            },
            Self::Upnp { .. } => "UPnP-IGD",
        }
    }

    /// How long until it should be renewed: half of what the router gave.
    fn renew_in(&self) -> Duration {
        let lifetime = match self {
            Self::Pmp(m) => Duration::from_secs(m.lifetime().into()),
            Self::Upnp { .. } => LIFETIME,
        };
        (lifetime / 2).max(MIN_RENEW)
    }

    async fn renew(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Pmp(m) => m.renew().await.map_err(|e| anyhow::anyhow!("{e:?}")),
            Self::Upnp {
                gateway,
                external_port,
                local,
            } => Ok(gateway
                .add_port(
                    igd_next::PortMappingProtocol::UDP,
                    *external_port,
                    *local,
                    LIFETIME.as_secs() as u32,
                    DESCRIPTION,
                )
                .await?),
        }
    }

    /// The public address after a renewal: a PCP server may move the mapping, and any
    /// server its port. A NAT-PMP renewal does not say the address, which stays `was`'s.
    fn external(&self, was: SocketAddrV4) -> SocketAddrV4 {
        match self {
            Self::Pmp(m) => {
                let ip = match m.mapping_type() {
                    crab_nat::PortMappingType::Pcp {
                        external_ip: IpAddr::V4(ip),
                        ..
                    } => ip,
                    _ => *was.ip(),
                };
                SocketAddrV4::new(ip, m.external_port().get())
            }
            Self::Upnp { .. } => was,
        }
    }

    async fn remove(self) -> anyhow::Result<()> {
        match self {
            Self::Pmp(m) => m
                .try_drop()
                .await
                .map_err(|(e, _)| anyhow::anyhow!("{e:?}")),
            Self::Upnp {
                gateway,
                external_port,
                ..
            } => Ok(gateway
                .remove_port(igd_next::PortMappingProtocol::UDP, external_port)
                .await?),
        }
    }
}

/// Maps, renews and, when told to stop, removes; maps again after a failed renewal.
async fn hold(
    port: u16,
    mapped: watch::Sender<Option<SocketAddrV4>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Some(port) = NonZeroU16::new(port) else {
        return;
    };
    loop {
        let attempt = tokio::select! {
            attempt = map(port) => attempt,
            _ = &mut stopped => return,
        };
        let (mut mapping, external) = match attempt {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!("no port mapping from the router: {e:#}");
                mapped.send_replace(None);
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => continue,
                    _ = &mut stopped => return,
                }
            }
        };
        if behind_another_nat(*external.ip()) {
            // A mapping on a router that is itself behind a NAT (a carrier's, say) reaches
            // no one outside; it is given back.
            tracing::info!(protocol = mapping.protocol(), %external, "the router maps the WireGuard port, but its own address is private: not offered");
            let _ = tokio::time::timeout(REMOVE_TIMEOUT, mapping.remove()).await;
            tokio::select! {
                () = tokio::time::sleep(RETRY) => continue,
                _ = &mut stopped => return,
            }
        }
        tracing::info!(protocol = mapping.protocol(), %external, "the router maps the WireGuard port");
        mapped.send_replace(Some(external));
        let mut external = external;
        loop {
            tokio::select! {
                () = tokio::time::sleep(mapping.renew_in()) => {
                    let renewed = tokio::time::timeout(ATTEMPT * 3, mapping.renew())
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer")));
                    if let Err(e) = renewed {
                        tracing::warn!(protocol = mapping.protocol(), "renewing the port mapping failed, mapping again: {e:#}");
                        mapped.send_replace(None);
                        break;
                    }
                    tracing::debug!(protocol = mapping.protocol(), next_in = ?mapping.renew_in(), "port mapping renewed");
                    let now = mapping.external(external);
                    if now != external {
                        tracing::info!(protocol = mapping.protocol(), was = %external, %now, "the router moved the mapping");
                        external = now;
                        mapped.send_replace(Some(now));
                    }
                }
                _ = &mut stopped => {
                    let protocol = mapping.protocol();
                    match tokio::time::timeout(REMOVE_TIMEOUT, mapping.remove()).await {
                        Ok(Ok(())) => tracing::info!(protocol, "port mapping removed"),
                        Ok(Err(e)) => tracing::warn!(protocol, "removing the port mapping: {e:#}"),
                        Err(_) => tracing::warn!(protocol, "the router did not answer the removal of the port mapping"),
                    }
                    return;
                }
            }
        }
    }
}

/// A mapping of UDP `port`, by the first protocol the router answers.
async fn map(port: NonZeroU16) -> anyhow::Result<(Mapping, SocketAddrV4)> {
    let gateway = default_gateway()?;
    let pmp = async {
        let client = local_address_towards(gateway)?;
        let options = crab_nat::PortMappingOptions {
            external_port: Some(port),
            lifetime_seconds: Some(LIFETIME.as_secs() as u32),
            timeout_config: Some(crab_nat::TimeoutConfig {
                initial_timeout: Duration::from_millis(250),
                max_retries: 2,
                max_retry_timeout: Some(Duration::from_secs(1)),
            }),
        };
        let mapping = crab_nat::PortMapping::new(
            IpAddr::V4(gateway),
            IpAddr::V4(client),
            crab_nat::InternetProtocol::Udp,
            port,
            options,
        )
        .await
        .map_err(|e| anyhow::anyhow!("PCP and NAT-PMP: {e:?}"))?;
        let ip = match mapping.mapping_type() {
            crab_nat::PortMappingType::Pcp {
                external_ip: IpAddr::V4(ip),
                ..
            } => ip,
            crab_nat::PortMappingType::Pcp { .. } => anyhow::bail!("PCP mapped to IPv6"),
            crab_nat::PortMappingType::NatPmp => {
                crab_nat::natpmp::external_address(IpAddr::V4(gateway), options.timeout_config)
                    .await
                    .map_err(|e| anyhow::anyhow!("NAT-PMP external address: {e:?}"))?
            }
        };
        let external = SocketAddrV4::new(ip, mapping.external_port().get());
        anyhow::Ok((Mapping::Pmp(mapping), external))
    };
    let pmp_error = match tokio::time::timeout(ATTEMPT, pmp).await {
        Ok(Ok(found)) => return Ok(found),
        Ok(Err(e)) => e,
        Err(_) => anyhow::anyhow!("PCP and NAT-PMP: no answer within {ATTEMPT:?}"),
    };
    let upnp = async {
        let options = igd_next::SearchOptions {
            timeout: Some(ATTEMPT),
            single_search_timeout: Some(ATTEMPT),
            ..Default::default()
        };
        let gateway = igd_next::aio::tokio::search_gateway(options).await?;
        let ip = match gateway.get_external_ip().await? {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => anyhow::bail!("the gateway's external address is IPv6"),
        };
        let local = SocketAddr::new(
            IpAddr::V4(local_address_towards(match gateway.addr.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => anyhow::bail!("the gateway is on IPv6"),
            })?),
            port.get(),
        );
        gateway
            .add_port(
                igd_next::PortMappingProtocol::UDP,
                port.get(),
                local,
                LIFETIME.as_secs() as u32,
                DESCRIPTION,
            )
            .await?;
        let external = SocketAddrV4::new(ip, port.get());
        anyhow::Ok((
            Mapping::Upnp {
                gateway,
                external_port: port.get(),
                local,
            },
            external,
        ))
    };
    match tokio::time::timeout(ATTEMPT * 3, upnp).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(anyhow::anyhow!("{pmp_error:#}; UPnP-IGD: {e:#}")),
        Err(_) => Err(anyhow::anyhow!("{pmp_error:#}; UPnP-IGD: no answer")),
    }
}

/// Whether a router's external address is itself private (RFC 1918, or a carrier's shared
/// 100.64.0.0/10), so that a mapping on it reaches no one outside.
fn behind_another_nat(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
}

/// The IPv4 default route's gateway, from `/proc/net/route`.
fn default_gateway() -> anyhow::Result<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route")?;
    parse_default_gateway(&table).ok_or_else(|| anyhow::anyhow!("no IPv4 default route"))
}

/// The gateway of the first default route in the kernel's route table text.
fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, flags) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
        let flags = u16::from_str_radix(flags, 16).ok()?;
        // RTF_UP and RTF_GATEWAY.
        if *destination != "00000000" || flags & 0x3 != 0x3 {
            return None;
        }
        // The kernel prints the address in host (little-endian) byte order.
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        Some(Ipv4Addr::from(raw.swap_bytes()))
    })
}

/// This machine's address on the way to `gateway`, as the router sees it.
fn local_address_towards(gateway: Ipv4Addr) -> anyhow::Result<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect((gateway, 5351))?;
    match socket.local_addr()?.ip() {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => anyhow::bail!("no IPv4 address towards {gateway}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_gateway_is_read_from_the_kernels_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0005A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0105A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_default_gateway(table),
            Some(Ipv4Addr::new(192, 168, 5, 1))
        );
        let no_default = "Iface\tDestination\tGateway\tFlags\n eth0\t0005A8C0\t00000000\t0001\n";
        assert_eq!(parse_default_gateway(no_default), None);
        // A default route that is down is not the way out.
        let down = "Iface\tDestination\tGateway\tFlags\neth0\t00000000\t0105A8C0\t0002\n";
        assert_eq!(parse_default_gateway(down), None);
        assert_eq!(parse_default_gateway(""), None);
    }

    #[test]
    fn a_mapping_on_a_router_with_a_private_address_is_not_offered() {
        for private in ["192.168.1.1", "10.0.0.1", "100.64.3.4", "172.20.0.1"] {
            assert!(behind_another_nat(private.parse().unwrap()), "{private}");
        }
        for public in ["11.0.1.1", "100.128.0.1", "198.51.100.7"] {
            assert!(!behind_another_nat(public.parse().unwrap()), "{public}");
        }
    }
}
