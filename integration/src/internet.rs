//! A small internet in namespaces: an `inet` router that every public link hangs off, public
//! hosts (the lighthouse), and home sites whose router masquerades its LAN with nftables,
//! either keeping source ports (a port-restricted cone NAT, as Linux conntrack does by default)
//! or picking a random port per flow (`masquerade random`: a symmetric NAT). Like every home
//! router, each drops what arrives on its WAN side unless it belongs to a flow from inside.
//! That matters for hole punching: without it, an early punch from a peer would reach the
//! router's own stack, leave a conntrack entry for that port pair, and push the router to a
//! different port when the node behind it punches back. Nothing in this internet has a route
//! to the host's own network.

use std::net::Ipv4Addr;

use crate::lab::{Lab, Ns};

/// How a site's router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Keeps the source port when it can: endpoint-independent mapping, port-restricted
    /// filtering.
    Cone,
    /// A new random port for every destination.
    Symmetric,
}

/// A home site: a router with a WAN link to the internet and a bridged LAN behind NAT.
#[derive(Debug, Clone)]
pub struct Site {
    pub router: Ns,
    /// The router's public address.
    pub wan: Ipv4Addr,
    /// The LAN is 192.168.`lan`.0/24.
    lan: u8,
    hosts: u8,
}

impl Site {
    /// The LAN address of the `n`th host (from 2).
    pub fn host_ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.lan, n)
    }
}

#[derive(Debug)]
pub struct Internet {
    pub lab: Lab,
    pub inet: Ns,
    links: u8,
    /// The outer end of every uplink: (namespace, interface).
    uplinks: Vec<(Ns, String)>,
    /// Whether uplinks split GSO trains into datagrams (see [`Internet::lose`]).
    split_trains: bool,
}

fn forwarding(lab: &Lab, ns: &Ns) -> anyhow::Result<()> {
    lab.exec(ns, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])
        .map(drop)
}

impl Internet {
    pub fn new(mut lab: Lab) -> anyhow::Result<Self> {
        let inet = lab.namespace("inet")?;
        forwarding(&lab, &inet)?;
        Ok(Self {
            lab,
            inet,
            links: 0,
            uplinks: Vec::new(),
            split_trains: false,
        })
    }

    /// The lab, to keep it running ([`Lab::keep`]) when the internet is no longer needed.
    pub fn into_lab(self) -> Lab {
        self.lab
    }

    /// A new link from `ns` to the internet on 198.18.k.0/24: `ns` gets .1 on `iface` and a
    /// default route through the internet's .254.
    fn uplink(&mut self, ns: &Ns, iface: &str) -> anyhow::Result<Ipv4Addr> {
        let k = self.links + 1;
        self.uplink_at(ns, iface, Ipv4Addr::new(198, 18, k, 1))
    }

    /// As [`Internet::uplink`], with `public` on a /24 of its own (the internet is its .254).
    fn uplink_at(&mut self, ns: &Ns, iface: &str, public: Ipv4Addr) -> anyhow::Result<Ipv4Addr> {
        let [a, b, c, d] = public.octets();
        anyhow::ensure!(d != 254 && d != 0, "{public}: .254 is the internet's side");
        self.links += 1;
        let k = self.links;
        let inet_if = format!("l{k}");
        self.lab.link(ns, iface, &self.inet, &inet_if)?;
        self.lab.addr(ns, iface, &format!("{public}/24"))?;
        let gateway = Ipv4Addr::new(a, b, c, 254);
        self.lab
            .addr(&self.inet, &inet_if, &format!("{gateway}/24"))?;
        self.lab.ip(
            ns,
            &["route", "add", "default", "via", &gateway.to_string()],
        )?;
        self.uplinks.push((ns.clone(), iface.to_owned()));
        if self.split_trains {
            self.split_trains_on(ns, iface)?;
        }
        Ok(public)
    }

    fn split_trains_on(&self, ns: &Ns, iface: &str) -> anyhow::Result<()> {
        self.lab
            .ip(ns, &["link", "set", "dev", iface, "gso_max_segs", "1"])
            .map(drop)
    }

    /// A host with a public address of its own.
    pub fn public_host(&mut self, role: &str) -> anyhow::Result<(Ns, Ipv4Addr)> {
        let ns = self.lab.namespace(role)?;
        let ip = self.uplink(&ns, "eth0")?;
        Ok((ns, ip))
    }

    /// A host with the public address `ip` (such as the documentation address a guide's
    /// example config names), on a /24 of its own.
    pub fn public_host_at(&mut self, role: &str, ip: Ipv4Addr) -> anyhow::Result<Ns> {
        let ns = self.lab.namespace(role)?;
        self.uplink_at(&ns, "eth0", ip)?;
        Ok(ns)
    }

    /// A home site behind a NAT router.
    pub fn site(&mut self, role: &str, nat: Nat) -> anyhow::Result<Site> {
        let router = self.lab.namespace(role)?;
        let wan = self.uplink(&router, "wan")?;
        self.site_on(router, wan, nat)
    }

    /// A home site whose router's public address is `wan`, on a /24 of its own.
    pub fn site_at(&mut self, role: &str, nat: Nat, wan: Ipv4Addr) -> anyhow::Result<Site> {
        let router = self.lab.namespace(role)?;
        let wan = self.uplink_at(&router, "wan", wan)?;
        self.site_on(router, wan, nat)
    }

    fn site_on(&mut self, router: Ns, wan: Ipv4Addr, nat: Nat) -> anyhow::Result<Site> {
        forwarding(&self.lab, &router)?;
        let lan = self.links;
        self.lab
            .ip(&router, &["link", "add", "br0", "type", "bridge"])?;
        self.lab.ip(&router, &["link", "set", "br0", "up"])?;
        self.lab
            .addr(&router, "br0", &format!("192.168.{lan}.1/24"))?;
        let masquerade = match nat {
            Nat::Cone => "masquerade",
            Nat::Symmetric => "masquerade random",
        };
        self.lab.nft(
            &router,
            &format!(
                "table ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat;\n    oifname \"wan\" {masquerade}\n  }}\n}}\n\
                 table inet firewall {{\n  chain input {{\n    type filter hook input priority filter;\n    iifname \"wan\" ct state established,related accept\n    iifname \"wan\" drop\n  }}\n  chain forward {{\n    type filter hook forward priority filter;\n    iifname \"wan\" ct state established,related accept\n    iifname \"wan\" ct status dnat accept\n    iifname \"wan\" drop\n  }}\n}}\n"
            ),
        )?;
        Ok(Site {
            router,
            wan,
            lan,
            hosts: 1,
        })
    }

    /// A host on a site's LAN; returns its namespace and LAN address.
    pub fn host_behind(&mut self, site: &mut Site, role: &str) -> anyhow::Result<(Ns, Ipv4Addr)> {
        let ns = self.lab.namespace(role)?;
        site.hosts += 1;
        let n = site.hosts;
        let port = format!("p{n}");
        self.lab.link(&ns, "eth0", &site.router, &port)?;
        self.lab
            .ip(&site.router, &["link", "set", &port, "master", "br0"])?;
        let ip = site.host_ip(n);
        self.lab.addr(&ns, "eth0", &format!("{ip}/24"))?;
        self.lab.ip(
            &ns,
            &[
                "route",
                "add",
                "default",
                "via",
                &format!("192.168.{}.1", site.lan),
            ],
        )?;
        Ok((ns, ip))
    }

    /// Drops `percent` of the packets the internet forwards, at random (the kernel here has no
    /// netem; nftables' `numgen` does the same job). meshd sends UDP GSO trains of up to 64 KiB
    /// that stay one buffer across veth links, so every uplink first splits them into single
    /// datagrams (from now on, and on uplinks added later): the rule then drops datagrams, as
    /// a lossy link would, not whole trains.
    pub fn lose(&mut self, percent: u8) -> anyhow::Result<()> {
        self.split_trains = true;
        for (ns, iface) in &self.uplinks {
            self.split_trains_on(ns, iface)?;
        }
        self.lab.nft(
            &self.inet,
            &format!(
                "table inet loss {{\n  chain forward {{\n    type filter hook forward priority 0;\n    numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
            ),
        )
    }

    /// Runs Debian's miniupnpd (nftables build, unpacked by `scripts/install-deps.sh`) on
    /// `site`'s router: it maps ports on request from the LAN, by PCP and NAT-PMP if `pmp`,
    /// and by UPnP-IGD. A PCP mapping lasts 120 s at most, so that a test sees it
    /// renewed. Its rules go in chains of its own that the router's hooks jump to; the
    /// router's firewall lets in what they forward (`ct status dnat`). Returns the lab's
    /// handle on it.
    pub fn run_miniupnpd(&mut self, site: &Site, pmp: bool) -> anyhow::Result<usize> {
        self.lab.nft(
            &site.router,
            "table inet filter {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    jump miniupnpd\n  }\n  chain miniupnpd {\n  }\n  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    jump prerouting_miniupnpd\n  }\n  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n    jump postrouting_miniupnpd\n  }\n  chain prerouting_miniupnpd {\n  }\n  chain postrouting_miniupnpd {\n  }\n}\n",
        )?;
        let name = site.router.name();
        let conf = self.lab.dir().join(format!("{name}-miniupnpd.conf"));
        let pmp = if pmp { "yes" } else { "no" };
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan\nlistening_ip=br0\nenable_natpmp={pmp}\nenable_upnp=yes\n\
                 secure_mode=yes\nsystem_uptime=yes\nuuid=3a1ac0d3-0b5e-4c0a-9c5e-b3f1d1c0ffee\n\
                 upnp_table_name=filter\nupnp_nat_table_name=filter\nmin_lifetime=60\n\
                 max_lifetime=120\nallow 1024-65535 192.168.{lan}.0/24 1024-65535\n\
                 deny 0-65535 0.0.0.0/0 0-65535\n",
                lan = site.lan
            ),
        )?;
        let pid = self.lab.dir().join(format!("{name}-miniupnpd.pid"));
        let binary = std::path::Path::new("/opt/rma-mesh-test/miniupnpd/usr/sbin/miniupnpd");
        anyhow::ensure!(
            binary.exists(),
            "no {}: run scripts/install-deps.sh",
            binary.display()
        );
        let handle = self.lab.spawn(
            &site.router,
            "miniupnpd",
            binary,
            &[
                "-d",
                "-f",
                &conf.to_string_lossy(),
                "-P",
                &pid.to_string_lossy(),
            ],
        )?;
        crate::wait::until(
            "miniupnpd to listen",
            std::time::Duration::from_secs(10),
            || {
                let log = self.lab.proc(handle).log_text();
                let ready = if pmp == "yes" {
                    "Listening for NAT-PMP/PCP traffic"
                } else {
                    "HTTP listening on port"
                };
                log.contains(ready).then_some(())
            },
        )?;
        Ok(handle)
    }

    /// Makes `site`'s router drop every UDP packet it would forward, either way, as a
    /// network that lets only TCP out does; until [`Internet::allow_udp`].
    pub fn block_udp(&self, site: &Site) -> anyhow::Result<()> {
        self.lab.nft(
            &site.router,
            "table inet udp_block {\n  chain forward {\n    type filter hook forward priority -10;\n    meta l4proto udp counter drop\n  }\n}\n",
        )
    }

    /// Makes `site`'s router drop the UDP it would forward to `port` (a firewall that blocks
    /// QUIC to a known port, say); until [`Internet::allow_udp`].
    pub fn block_udp_to(&self, site: &Site, port: u16) -> anyhow::Result<()> {
        self.lab.nft(
            &site.router,
            &format!("table inet udp_block {{\n  chain forward {{\n    type filter hook forward priority -10;\n    udp dport {port} counter drop\n  }}\n}}\n"),
        )
    }

    /// Makes `site`'s router forward nothing at all, as a network whose only way out is a
    /// proxy on its router does; until [`Internet::allow_udp`] lifts it (the same rule name).
    pub fn block_forwarding(&self, site: &Site) -> anyhow::Result<()> {
        self.lab.nft(
            &site.router,
            "table inet udp_block {\n  chain forward {\n    type filter hook forward priority -10;\n    counter drop\n  }\n}\n",
        )
    }

    /// The router's LAN address, where a service on the router (a proxy) listens.
    pub fn router_lan_ip(site: &Site) -> Ipv4Addr {
        site.host_ip(1)
    }

    /// Lifts [`Internet::block_udp`] (and [`Internet::block_forwarding`]).
    pub fn allow_udp(&self, site: &Site) -> anyhow::Result<()> {
        self.lab
            .exec(
                &site.router,
                "nft",
                &["delete", "table", "inet", "udp_block"],
            )
            .map(drop)
    }

    /// Packets the loss rule has dropped so far.
    pub fn lost(&self) -> anyhow::Result<u64> {
        let out = self
            .lab
            .exec(&self.inet, "nft", &["list", "table", "inet", "loss"])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no packet counter in {text}"))
    }
}
