//! The `bridge` outbound network mode for execution environments.
//!
//! Each environment has its own network namespace. In bridge mode that namespace gets a veth
//! pair whose host side is a port of a Lambent-owned bridge (`lambent0` by default); the bridge
//! carries the gateway address, the host masquerades the subnet towards every other interface,
//! and nftables rules owned by Lambent make sure that nothing on the host itself (the platform's
//! API, databases, `127.0.0.1` services, the host's other addresses) and no other environment is
//! reachable from inside. Bridge ports are `isolated`, so environments cannot talk to each other
//! at layer 2 either.
//!
//! Configuration goes through `ip -batch -` (one process per side) and `nft -f -`, so no
//! netlink code lives here; attaching an environment costs two short-lived processes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Directories searched for `ip`, `nft` and `nsenter` after `$PATH` (servers are often started
/// with a `$PATH` that lacks the `sbin` directories).
const TOOL_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Why the bridge network could not be set up or an environment attached.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A configuration command ran and reported failure.
    #[error("`{command}` failed: {stderr}")]
    CommandFailed {
        /// The command line (and, for batch commands, the script fed to it).
        command: String,
        /// What the command wrote to stderr (and its exit status).
        stderr: String,
    },
    /// A configuration command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command that could not be started.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required tool (`ip`, `nft`, `nsenter`) is not installed.
    #[error("`{0}` not found in $PATH or the usual sbin directories")]
    ToolMissing(&'static str),
    /// Reading or writing a kernel setting failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The slot does not map to a free address of the subnet.
    #[error("no free address for slot {slot} in {network}/{prefix_len} (capacity {capacity})")]
    Exhausted {
        /// The slot asked for.
        slot: u32,
        /// The subnet's network address.
        network: Ipv4Addr,
        /// The subnet's prefix length.
        prefix_len: u8,
        /// How many environments the subnet holds.
        capacity: u32,
    },
    /// The bridge name or subnet is unusable.
    #[error("invalid bridge configuration: {0}")]
    Invalid(String),
}

/// Paths of the external tools used to configure the network.
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    nft: PathBuf,
    nsenter: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, NetError> {
        Ok(Tools {
            ip: find_tool("ip").ok_or(NetError::ToolMissing("ip"))?,
            nft: find_tool("nft").ok_or(NetError::ToolMissing("nft"))?,
            nsenter: find_tool("nsenter").ok_or(NetError::ToolMissing("nsenter"))?,
        })
    }
}

/// Finds an executable by name in `$PATH`, then in the usual sbin/bin directories.
fn find_tool(name: &str) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain(TOOL_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `program args…`, feeding `stdin` (if any) to it, and fails with its stderr unless it
/// exits successfully.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    let mut command_line = program.display().to_string();
    for arg in args {
        command_line.push(' ');
        command_line.push_str(arg);
    }
    if let Some(script) = stdin {
        let _ = write!(command_line, " <<< {:?}", script.trim_end());
    }
    tracing::debug!(command = %command_line, "net: running");
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Spawn {
            command: command_line.clone(),
            source,
        })?;
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that dies early closes the pipe; its exit status tells the real story.
        if let Err(e) = pipe.write_all(script.as_bytes()) {
            tracing::debug!(command = %command_line, error = %e, "net: writing stdin failed");
        }
    }
    let output = child.wait_with_output().map_err(|source| NetError::Spawn {
        command: command_line.clone(),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = output.status.to_string();
        }
        Err(NetError::CommandFailed {
            command: command_line,
            stderr,
        })
    }
}

/// Checks that `name` is usable both as an interface name and inside nft table names.
fn validate_bridge_name(name: &str) -> Result<(), NetError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok
        || name.len() > MAX_IFNAME
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(NetError::Invalid(format!(
            "bridge name {name:?} must be 1-{MAX_IFNAME} ASCII letters, digits or '_', starting with a letter"
        )));
    }
    Ok(())
}

fn validate_prefix_len(prefix_len: u8) -> Result<(), NetError> {
    if !(8..=30).contains(&prefix_len) {
        return Err(NetError::Invalid(format!(
            "prefix length /{prefix_len} must be between /8 and /30"
        )));
    }
    Ok(())
}

/// The network address of `addr/prefix_len` (host bits cleared).
pub fn network_address(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len.min(32)))
    };
    Ipv4Addr::from(u32::from(addr) & mask)
}

/// The gateway (bridge) address of the subnet: its first host address.
pub fn gateway_address(subnet: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(network_address(subnet, prefix_len)).wrapping_add(1))
}

/// How many environments a subnet of this prefix length holds: every address except the
/// network, gateway and broadcast addresses (0 for prefixes longer than /30).
pub fn subnet_capacity(prefix_len: u8) -> u32 {
    if prefix_len > 30 {
        return 0;
    }
    let size = 1u64 << (32 - u32::from(prefix_len));
    u32::try_from(size.saturating_sub(3)).unwrap_or(u32::MAX)
}

/// The address of environment `slot` in `subnet/prefix_len`: slot 0 gets the host right after
/// the gateway, and so on; slots beyond the subnet's capacity are [`NetError::Exhausted`].
pub fn slot_address(subnet: Ipv4Addr, prefix_len: u8, slot: u32) -> Result<Ipv4Addr, NetError> {
    let network = network_address(subnet, prefix_len);
    let capacity = subnet_capacity(prefix_len);
    if slot >= capacity {
        return Err(NetError::Exhausted {
            slot,
            network,
            prefix_len,
            capacity,
        });
    }
    // capacity < 2^32 - 3 and the network's host bits are zero, so this cannot overflow.
    Ok(Ipv4Addr::from(u32::from(network) + 2 + slot))
}

/// 16-bit FNV-1a digest of the bridge name, so that two bridges on one host (a server and a
/// test run, say) never hand out the same veth names.
fn bridge_tag(bridge: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bridge.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Fold to 16 bits (xor-folding keeps all input bits in play).
    ((hash >> 16) ^ (hash & 0xffff)) as u16
}

/// Host-side interface name of environment `slot` on `bridge`: `lb` + 4 hex digits identifying
/// the bridge + `v` + the decimal slot, e.g. `lb3fa2v17`. At most 15 characters for any slot
/// that has an address (subnets are at most /8, so slots have at most 8 digits).
pub fn veth_name(bridge: &str, slot: u32) -> String {
    format!("lb{:04x}v{slot}", bridge_tag(bridge))
}

/// Name of Lambent's `inet` filter table for `bridge`.
pub fn filter_table_name(bridge: &str) -> String {
    format!("{bridge}_filter")
}

/// Name of Lambent's `ip` NAT table for `bridge`.
pub fn nat_table_name(bridge: &str) -> String {
    format!("{bridge}_nat")
}

/// The nftables script (for `nft -f -`) that installs, replacing any previous copy atomically,
/// Lambent's tables for `bridge` with subnet `subnet/prefix_len`:
/// masquerading of the subnet towards every other interface, an input hook that drops
/// everything from the bridge to the host except established/related traffic, and a forward
/// hook that drops bridge-to-bridge traffic and new connections into the bridge.
pub fn nft_ruleset(
    bridge: &str,
    subnet: Ipv4Addr,
    prefix_len: u8,
    api_port: Option<u16>,
) -> String {
    let network = network_address(subnet, prefix_len);
    let filter = filter_table_name(bridge);
    let nat = nat_table_name(bridge);
    let api = match api_port {
        Some(port) => format!(
            "iifname \"{bridge}\" ip daddr {} tcp dport {port} accept\n\t\t",
            gateway_address(network, prefix_len)
        ),
        None => String::new(),
    };
    // `table X` + `delete table X` first: creates the table if missing so the delete always
    // succeeds; the whole file is one transaction, so there is no window without rules.
    format!(
        r#"table inet {filter}
delete table inet {filter}
table inet {filter} {{
	chain input {{
		type filter hook input priority filter; policy accept;
		iifname "{bridge}" ct state established,related accept
		{api}iifname "{bridge}" drop
	}}
	chain forward {{
		type filter hook forward priority filter; policy accept;
		iifname "{bridge}" oifname "{bridge}" drop
		iifname "{bridge}" accept
		oifname "{bridge}" ct state established,related accept
		oifname "{bridge}" drop
	}}
}}
table ip {nat}
delete table ip {nat}
table ip {nat} {{
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr {network}/{prefix_len} oifname != "{bridge}" masquerade
	}}
}}
"#
    )
}

/// The nftables script that removes Lambent's tables for `bridge` (succeeding if they are
/// already gone).
pub fn nft_teardown_script(bridge: &str) -> String {
    let filter = filter_table_name(bridge);
    let nat = nat_table_name(bridge);
    format!(
        "table inet {filter}\ndelete table inet {filter}\ntable ip {nat}\ndelete table ip {nat}\n"
    )
}

/// The `ip -batch` script run on the host for one environment: create the veth pair with the
/// peer directly inside the namespace as `eth0`, enslave the host side to the bridge as an
/// isolated port and bring it up.
fn host_attach_script(bridge: &str, host_ifname: &str, netns: &Path) -> String {
    format!(
        "link add {host_ifname} type veth peer name eth0 netns {netns}\n\
         link set dev {host_ifname} master {bridge}\n\
         link set dev {host_ifname} type bridge_slave isolated on\n\
         link set dev {host_ifname} up\n",
        netns = netns.display()
    )
}

/// The `ip -batch` script run inside the namespace: loopback and `eth0` up, the address and
/// a default route via the gateway.
fn inside_attach_script(address: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> String {
    format!(
        "link set dev lo up\n\
         link set dev eth0 up\n\
         addr add {address}/{prefix_len} dev eth0\n\
         route add default via {gateway} dev eth0\n"
    )
}

/// Makes a namespace path usable by a child process: `/proc/self/…` and `/proc/thread-self/…`
/// name *our* process or thread, which the child is not, so they are rewritten with our pid
/// (and the calling thread's tid). Paths through `/proc/self/fd/N` keep working because the
/// child opens `/proc/<our pid>/fd/N` (we are root).
fn shareable_ns_path(netns: &Path) -> PathBuf {
    if let Ok(rest) = netns.strip_prefix("/proc/self") {
        return Path::new("/proc")
            .join(std::process::id().to_string())
            .join(rest);
    }
    if let Ok(rest) = netns.strip_prefix("/proc/thread-self") {
        return Path::new("/proc")
            .join(std::process::id().to_string())
            .join("task")
            .join(nix::unistd::gettid().to_string())
            .join(rest);
    }
    netns.to_path_buf()
}

/// Enables IPv4 forwarding on the host.
fn enable_ip_forward() -> Result<(), NetError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH)
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(PATH, "1")?;
    tracing::info!("net: enabled net.ipv4.ip_forward");
    Ok(())
}

fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

/// Removes bridge `name` and its nft tables; failures are logged, not returned.
fn teardown_by_name(tools: &Tools, name: &str) {
    if interface_exists(name)
        && let Err(e) = run(&tools.ip, &["link", "del", "dev", name], None)
    {
        tracing::warn!(bridge = name, error = %e, "net: could not delete bridge");
    }
    if let Err(e) = run(&tools.nft, &["-f", "-"], Some(&nft_teardown_script(name))) {
        tracing::warn!(bridge = name, error = %e, "net: could not delete nft tables");
    }
}

/// The host side of bridge networking: a bridge device, its gateway address, NAT and filter rules.
#[derive(Debug)]
pub struct Bridge {
    name: String,
    network: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
    tools: Tools,
}

impl Bridge {
    /// Creates (or re-uses, idempotently) bridge `name` (e.g. `lambent0`) whose address is the
    /// gateway, the first host of `subnet/prefix_len` (e.g. `10.213.0.1/16`); enables
    /// `net.ipv4.ip_forward`; and installs Lambent's nftables tables `inet <name>_filter` and
    /// `ip <name>_nat` (see [`nft_ruleset`]), replaced wholesale so a restart after a crash is
    /// clean. Environments can then reach the outside through NAT but neither the host itself
    /// nor each other.
    pub fn setup(name: &str, subnet: Ipv4Addr, prefix_len: u8) -> Result<Bridge, NetError> {
        validate_bridge_name(name)?;
        validate_prefix_len(prefix_len)?;
        let tools = Tools::find()?;
        let network = network_address(subnet, prefix_len);
        let gateway = gateway_address(network, prefix_len);

        enable_ip_forward()?;

        let mut script = String::new();
        if interface_exists(name) {
            if !is_bridge(name) {
                return Err(NetError::Invalid(format!(
                    "interface {name} exists and is not a bridge"
                )));
            }
            tracing::info!(bridge = name, "net: re-using existing bridge");
        } else {
            let _ = writeln!(script, "link add name {name} type bridge");
        }
        let _ = writeln!(script, "addr flush dev {name}");
        let _ = writeln!(script, "addr add {gateway}/{prefix_len} dev {name}");
        let _ = writeln!(script, "link set dev {name} up");
        run(&tools.ip, &["-batch", "-"], Some(&script))?;

        // Environments have no IPv6 addresses beyond link-local; keep the host out of that too
        // (the inet filter drops it anyway). Best effort: IPv6 may be disabled altogether.
        let v6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        if Path::new(&v6).exists()
            && let Err(e) = std::fs::write(&v6, "1")
        {
            tracing::debug!(bridge = name, error = %e, "net: could not disable IPv6");
        }

        run(
            &tools.nft,
            &["-f", "-"],
            Some(&nft_ruleset(name, network, prefix_len, None)),
        )?;

        tracing::info!(bridge = name, %gateway, prefix_len, "net: bridge ready");
        Ok(Bridge {
            name: name.to_owned(),
            network,
            prefix_len,
            gateway,
            tools,
        })
    }

    /// Lets environments reach TCP `port` on the gateway address (the platform's API listener
    /// for them) and nothing else of the host: re-installs the filter with that one exception,
    /// in one nftables transaction.
    pub fn allow_api_port(&self, port: u16) -> Result<(), NetError> {
        run(
            &self.tools.nft,
            &["-f", "-"],
            Some(&nft_ruleset(
                &self.name,
                self.network,
                self.prefix_len,
                Some(port),
            )),
        )?;
        tracing::info!(bridge = %self.name, gateway = %self.gateway, port, "net: API port open to environments");
        Ok(())
    }

    /// Checks that this host can do bridge networking: `ip`, `nft` and `nsenter` exist, and a
    /// throwaway bridge with an isolated veth port and throwaway nft filter/NAT tables can be
    /// created and removed. Used at start-up to choose the default network mode; the error is a
    /// human-readable reason.
    pub fn probe() -> Result<(), String> {
        let tools = Tools::find().map_err(|e| e.to_string())?;
        std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/net/ipv4/ip_forward")
            .map_err(|e| format!("cannot write net.ipv4.ip_forward: {e}"))?;

        let tag = std::process::id() % 100_000;
        let bridge = format!("lbprobe{tag}");
        let (veth, peer) = (format!("lbpa{tag}"), format!("lbpb{tag}"));
        let create = format!(
            "link add name {bridge} type bridge\n\
             link add {veth} type veth peer name {peer}\n\
             link set dev {veth} master {bridge}\n\
             link set dev {veth} type bridge_slave isolated on\n"
        );
        let links = run(&tools.ip, &["-batch", "-"], Some(&create));
        for dev in [&veth, &bridge] {
            if interface_exists(dev) {
                let _ = run(&tools.ip, &["link", "del", "dev", dev], None);
            }
        }
        links.map_err(|e| format!("cannot create a bridge with an isolated veth port: {e}"))?;

        let tables = run(
            &tools.nft,
            &["-f", "-"],
            Some(&nft_ruleset(
                &bridge,
                Ipv4Addr::new(10, 255, 0, 0),
                24,
                None,
            )),
        );
        let _ = run(
            &tools.nft,
            &["-f", "-"],
            Some(&nft_teardown_script(&bridge)),
        );
        tables.map_err(|e| format!("cannot install nftables filter/NAT tables: {e}"))?;
        Ok(())
    }

    /// Attaches the network namespace at `netns` (any path naming it, e.g.
    /// `/proc/<pid>/task/<tid>/ns/net` or `/proc/self/fd/<n>`) as environment `slot`: creates a
    /// veth pair whose host side [`veth_name`] is an isolated, up port of the bridge and whose
    /// peer is created directly inside the namespace as `eth0`, then (inside) brings `lo` and
    /// `eth0` up, assigns [`slot_address`] and a default route via the gateway. A stale host
    /// interface of the same name (from a crashed run) is removed and the attach retried once.
    /// Costs two short-lived processes (`ip -batch -` and `nsenter … ip -batch -`).
    pub fn attach(&self, netns: &Path, slot: u32) -> Result<Veth, NetError> {
        let started = Instant::now();
        let address = slot_address(self.network, self.prefix_len, slot)?;
        let host_ifname = veth_name(&self.name, slot);
        let netns = shareable_ns_path(netns);
        let veth = Veth {
            host_ifname,
            address,
            ip: self.tools.ip.clone(),
        };

        let host_script = host_attach_script(&self.name, &veth.host_ifname, &netns);
        if let Err(first) = run(&self.tools.ip, &["-batch", "-"], Some(&host_script)) {
            // Either a stale interface of this name blocked `link add`, or a later step failed
            // after creating it: remove it and, in the first case, start over once.
            let existed = interface_exists(&veth.host_ifname);
            veth.release();
            if !existed {
                return Err(first);
            }
            tracing::warn!(ifname = %veth.host_ifname, error = %first, "net: replaced existing veth");
            if let Err(e) = run(&self.tools.ip, &["-batch", "-"], Some(&host_script)) {
                veth.release();
                return Err(e);
            }
        }

        let inside_script = inside_attach_script(address, self.prefix_len, self.gateway);
        let net_arg = format!("--net={}", netns.display());
        let ip = self.tools.ip.to_string_lossy();
        if let Err(e) = run(
            &self.tools.nsenter,
            &[&net_arg, &ip, "-batch", "-"],
            Some(&inside_script),
        ) {
            veth.release();
            return Err(e);
        }
        tracing::debug!(
            ifname = %veth.host_ifname,
            %address,
            elapsed_us = started.elapsed().as_micros() as u64,
            "net: environment attached"
        );
        Ok(veth)
    }

    /// Removes the bridge and Lambent's nft tables (at server shutdown). Failures are logged;
    /// calling it again, or on a bridge that is already gone, is harmless.
    pub fn teardown(&self) {
        teardown_by_name(&self.tools, &self.name);
        tracing::info!(bridge = %self.name, "net: bridge removed");
    }

    /// The bridge device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The gateway address (the bridge's own address).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The subnet's network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The subnet's prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// How many environments can be attached at once (valid slots are `0..capacity`).
    pub fn capacity(&self) -> u32 {
        subnet_capacity(self.prefix_len)
    }
}

/// One environment's veth pair; dropping it does nothing (the pair disappears with the
/// namespace), [`Veth::release`] deletes it at once.
#[derive(Debug, Clone)]
pub struct Veth {
    /// Name of the host-side interface (a port of the bridge).
    pub host_ifname: String,
    /// The environment's address on `eth0`.
    pub address: Ipv4Addr,
    ip: PathBuf,
}

impl Veth {
    /// Deletes the pair now (both ends go away together); a pair that is already gone is fine.
    pub fn release(&self) {
        if !interface_exists(&self.host_ifname) {
            return;
        }
        if let Err(e) = run(&self.ip, &["link", "del", "dev", &self.host_ifname], None)
            && interface_exists(&self.host_ifname)
        {
            tracing::warn!(ifname = %self.host_ifname, error = %e, "net: could not delete veth");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd as _;
    use std::process::Child;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn addresses_skip_network_gateway_and_broadcast() {
        let net = Ipv4Addr::new(10, 213, 0, 0);
        assert_eq!(gateway_address(net, 16), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(
            gateway_address(Ipv4Addr::new(10, 213, 7, 9), 16),
            Ipv4Addr::new(10, 213, 0, 1)
        );
        assert_eq!(
            slot_address(net, 16, 0).unwrap(),
            Ipv4Addr::new(10, 213, 0, 2)
        );
        assert_eq!(
            slot_address(net, 16, 254).unwrap(),
            Ipv4Addr::new(10, 213, 1, 0)
        );
        assert_eq!(subnet_capacity(16), 65_533);
        assert_eq!(
            slot_address(net, 16, 65_532).unwrap(),
            Ipv4Addr::new(10, 213, 255, 254)
        );
        assert!(matches!(
            slot_address(net, 16, 65_533),
            Err(NetError::Exhausted {
                slot: 65_533,
                capacity: 65_533,
                ..
            })
        ));
        // Host bits in the subnet argument are ignored.
        assert_eq!(
            slot_address(Ipv4Addr::new(10, 213, 0, 1), 16, 0).unwrap(),
            Ipv4Addr::new(10, 213, 0, 2)
        );
        // /30: network, gateway, one environment, broadcast.
        assert_eq!(subnet_capacity(30), 1);
        let small = Ipv4Addr::new(192, 168, 5, 4);
        assert_eq!(
            slot_address(small, 30, 0).unwrap(),
            Ipv4Addr::new(192, 168, 5, 6)
        );
        assert!(slot_address(small, 30, 1).is_err());
        assert_eq!(subnet_capacity(31), 0);
        assert!(slot_address(small, 31, 0).is_err());
        assert!(slot_address(small, 32, 0).is_err());
        assert_eq!(subnet_capacity(8), (1 << 24) - 3);
        assert!(slot_address(net, 16, u32::MAX).is_err());
    }

    #[test]
    fn veth_names_fit_and_differ_per_bridge() {
        let a = veth_name("lambent0", 0);
        assert!(a.starts_with("lb") && a.ends_with("v0"), "{a}");
        assert_ne!(veth_name("lambent0", 7), veth_name("lambent1", 7));
        assert_ne!(veth_name("lambent0", 7), veth_name("lambent0", 8));
        // Largest slot with an address in the largest allowed subnet.
        let longest = veth_name("lambent0", subnet_capacity(8) - 1);
        assert!(longest.len() <= MAX_IFNAME, "{longest}");
        assert!(veth_name("x", u32::MAX).len() <= MAX_IFNAME + 2);
        assert!(
            veth_name("lambent0", 42)
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn bridge_names_and_prefixes_are_validated() {
        assert!(validate_bridge_name("lambent0").is_ok());
        assert!(validate_bridge_name("lb_test_123").is_ok());
        assert!(validate_bridge_name("").is_err());
        assert!(validate_bridge_name("0bridge").is_err());
        assert!(validate_bridge_name("bad-name").is_err());
        assert!(validate_bridge_name("has space").is_err());
        assert!(validate_bridge_name("much_too_long_name").is_err());
        assert!(validate_prefix_len(16).is_ok());
        assert!(validate_prefix_len(7).is_err());
        assert!(validate_prefix_len(31).is_err());
    }

    #[test]
    fn ruleset_text() {
        let script = nft_ruleset("lambent0", Ipv4Addr::new(10, 213, 0, 1), 16, None);
        assert!(
            script.starts_with("table inet lambent0_filter\ndelete table inet lambent0_filter\n")
        );
        assert!(script.contains("table ip lambent0_nat\ndelete table ip lambent0_nat\n"));
        assert!(script.contains("type filter hook input priority filter; policy accept;"));
        assert!(script.contains(
            "iifname \"lambent0\" ct state established,related accept\n\t\tiifname \"lambent0\" drop\n"
        ));
        assert!(script.contains("iifname \"lambent0\" oifname \"lambent0\" drop"));
        assert!(script.contains("oifname \"lambent0\" ct state established,related accept"));
        assert!(script.contains("type nat hook postrouting priority srcnat;"));
        assert!(script.contains("ip saddr 10.213.0.0/16 oifname != \"lambent0\" masquerade"));
        assert!(!script.contains("dport"));
        let open = nft_ruleset("lambent0", Ipv4Addr::new(10, 213, 0, 1), 16, Some(9000));
        assert!(open.contains(
            "iifname \"lambent0\" ct state established,related accept\n\t\tiifname \"lambent0\" ip daddr 10.213.0.1 tcp dport 9000 accept\n\t\tiifname \"lambent0\" drop\n"
        ));
        let down = nft_teardown_script("lambent0");
        assert_eq!(
            down,
            "table inet lambent0_filter\ndelete table inet lambent0_filter\n\
             table ip lambent0_nat\ndelete table ip lambent0_nat\n"
        );
    }

    #[test]
    fn attach_scripts() {
        let host = host_attach_script("lambent0", "lb1234v3", Path::new("/proc/9/task/10/ns/net"));
        assert_eq!(
            host,
            "link add lb1234v3 type veth peer name eth0 netns /proc/9/task/10/ns/net\n\
             link set dev lb1234v3 master lambent0\n\
             link set dev lb1234v3 type bridge_slave isolated on\n\
             link set dev lb1234v3 up\n"
        );
        let inside = inside_attach_script(
            Ipv4Addr::new(10, 213, 0, 5),
            16,
            Ipv4Addr::new(10, 213, 0, 1),
        );
        assert!(inside.contains("addr add 10.213.0.5/16 dev eth0\n"));
        assert!(inside.contains("route add default via 10.213.0.1 dev eth0\n"));
    }

    #[test]
    fn proc_self_paths_are_made_shareable() {
        let pid = std::process::id();
        assert_eq!(
            shareable_ns_path(Path::new("/proc/self/fd/7")),
            PathBuf::from(format!("/proc/{pid}/fd/7"))
        );
        let tid = nix::unistd::gettid();
        assert_eq!(
            shareable_ns_path(Path::new("/proc/thread-self/ns/net")),
            PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net"))
        );
        let other = Path::new("/proc/12/task/13/ns/net");
        assert_eq!(shareable_ns_path(other), other);
    }

    // ---- integration test (root only) ----

    type Job = Box<dyn FnOnce() + Send>;

    /// A thread living in its own network namespace that runs jobs sent to it.
    struct NsThread {
        jobs: Option<mpsc::Sender<Job>>,
        handle: Option<std::thread::JoinHandle<()>>,
        path: PathBuf,
    }

    impl NsThread {
        fn new() -> NsThread {
            let (jobs, rx) = mpsc::channel::<Job>();
            let (tid_tx, tid_rx) = mpsc::channel();
            let handle = std::thread::spawn(move || {
                let r = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map(|()| nix::unistd::gettid());
                let ok = r.is_ok();
                tid_tx.send(r).unwrap();
                if ok {
                    for job in rx {
                        job();
                    }
                }
            });
            let tid = tid_rx.recv().unwrap().expect("unshare(CLONE_NEWNET)");
            NsThread {
                jobs: Some(jobs),
                handle: Some(handle),
                path: PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id())),
            }
        }

        /// Runs `f` inside the namespace; the result arrives on the returned channel.
        fn spawn<R: Send + 'static>(
            &self,
            f: impl FnOnce() -> R + Send + 'static,
        ) -> mpsc::Receiver<R> {
            let (tx, rx) = mpsc::channel();
            let job: Job = Box::new(move || {
                let _ = tx.send(f());
            });
            self.jobs.as_ref().unwrap().send(job).unwrap();
            rx
        }

        fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
            self.spawn(f).recv().unwrap()
        }
    }

    impl Drop for NsThread {
        fn drop(&mut self) {
            self.jobs.take();
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    /// Removes everything the integration test created, even when it fails.
    struct Cleanup {
        tools: Tools,
        bridge: String,
        extra_links: Vec<String>,
        children: Vec<Child>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
            for link in &self.extra_links {
                if interface_exists(link) {
                    let _ = run(&self.tools.ip, &["link", "del", "dev", link], None);
                }
            }
            teardown_by_name(&self.tools, &self.bridge);
        }
    }

    fn output_in(netns: &Path, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts a TCP connect from inside `netns` with bash's /dev/tcp, bounded by `timeout`.
    fn connect_from(netns: &Path, target: SocketAddr) -> Child {
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["timeout", "1.5", "bash", "-c"])
            .arg(format!(
                "exec 3<>/dev/tcp/{}/{}",
                target.ip(),
                target.port()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Waits for an accept on a non-blocking listener for up to `limit`.
    fn accept_within(listener: &TcpListener, limit: Duration) -> Option<SocketAddr> {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((_, peer)) => return Some(peer),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    }

    fn wait_ns_ready(pid: u32) {
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let path = format!("/proc/{pid}/ns/net");
        let deadline = Instant::now() + Duration::from_secs(3);
        while std::fs::read_link(&path).ok().as_ref() == Some(&own) || !Path::new(&path).exists() {
            assert!(Instant::now() < deadline, "unshare did not happen");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn bridge_isolates_environments_from_host_and_each_other() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: bridge networking test needs root");
            return;
        }
        let started = Instant::now();
        let tools = Tools::find().expect("ip, nft and nsenter installed");
        let tag = std::process::id() % 1000;
        let name = format!("lbt{tag}");
        let outside_if = format!("lbto{tag}");
        let mut cleanup = Cleanup {
            tools: tools.clone(),
            bridge: name.clone(),
            extra_links: vec![outside_if.clone()],
            children: Vec::new(),
        };

        let probe_started = Instant::now();
        Bridge::probe().expect("probe");
        eprintln!("probe took {:?}", probe_started.elapsed());

        let bridge = Bridge::setup(&name, Ipv4Addr::new(10, 214, 0, 0), 16).unwrap();
        // Idempotent: a second setup re-uses the bridge and replaces the tables.
        let bridge = {
            drop(bridge);
            Bridge::setup(&name, Ipv4Addr::new(10, 214, 0, 0), 16).unwrap()
        };
        let gw = bridge.gateway();
        assert_eq!(gw, Ipv4Addr::new(10, 214, 0, 1));

        // Environment A: a thread's namespace (the form the worker hands over).
        let ns_a = NsThread::new();
        // Environment B: a process's namespace.
        let child = Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .unwrap();
        let b_pid = child.id();
        cleanup.children.push(child);
        wait_ns_ready(b_pid);
        let ns_b = PathBuf::from(format!("/proc/{b_pid}/ns/net"));

        let t = Instant::now();
        let veth_a = bridge.attach(&ns_a.path, 0).unwrap();
        let attach_a = t.elapsed();
        let t = Instant::now();
        let veth_b = bridge.attach(&ns_b, 1).unwrap();
        let attach_b = t.elapsed();
        eprintln!("attach took {attach_a:?} (thread netns) and {attach_b:?} (process netns)");
        // More samples, on fresh namespaces.
        let mut samples = Vec::new();
        for slot in 10..16 {
            let ns = NsThread::new();
            // The worker may also hand over an open namespace fd as /proc/self/fd/N.
            let file = std::fs::File::open(&ns.path).unwrap();
            let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            let t = Instant::now();
            let v = bridge.attach(&fd_path, slot).unwrap();
            samples.push(t.elapsed());
            let addr = output_in(&ns.path, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
            assert!(addr.contains(&format!("inet {}/16", v.address)), "{addr}");
            v.release();
            assert!(!interface_exists(&v.host_ifname));
        }
        eprintln!("attach on fresh namespaces: {samples:?}");
        // A slot whose host interface is still there (a crashed run, a reused slot) is
        // recovered: the stale pair is replaced.
        let stale = NsThread::new();
        let stale_veth = bridge.attach(&stale.path, 20).unwrap();
        let again = NsThread::new();
        let replaced = bridge.attach(&again.path, 20).unwrap();
        assert_eq!(stale_veth.host_ifname, replaced.host_ifname);
        let addr = output_in(
            &again.path,
            &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        );
        assert!(addr.contains("inet 10.214.0.22/16"), "{addr}");
        replaced.release();
        drop((stale, again));
        // Attaching a namespace that already has an eth0 fails and leaves nothing behind.
        let err = bridge.attach(&ns_b, 30).unwrap_err();
        assert!(matches!(err, NetError::CommandFailed { .. }), "{err}");
        assert!(!interface_exists(&veth_name(&name, 30)));
        assert_eq!(veth_a.address, Ipv4Addr::new(10, 214, 0, 2));
        assert_eq!(veth_b.address, Ipv4Addr::new(10, 214, 0, 3));
        assert!(matches!(
            bridge.attach(&ns_b, bridge.capacity()),
            Err(NetError::Exhausted { .. })
        ));

        // Inside A: address and default route.
        let addr = output_in(
            &ns_a.path,
            &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        );
        assert!(addr.contains("inet 10.214.0.2/16"), "{addr}");
        let route = output_in(&ns_a.path, &["ip", "route", "show", "default"]);
        assert!(route.contains("default via 10.214.0.1 dev eth0"), "{route}");
        let port_info = Command::new("bridge")
            .args(["-d", "link", "show", "dev", &veth_a.host_ifname])
            .output()
            .unwrap();
        let port_info = String::from_utf8_lossy(&port_info.stdout);
        assert!(port_info.contains("isolated on"), "{port_info}");
        assert!(port_info.contains(&format!("master {name}")), "{port_info}");

        // A listener inside A (for the host's positive check and B's negative one).
        let listener_a = ns_a.run(|| TcpListener::bind("0.0.0.0:0").unwrap());
        let a_target = SocketAddr::from((veth_a.address, listener_a.local_addr().unwrap().port()));
        // Positive control: the host can reach A (replies come back as established).
        TcpStream::connect_timeout(&a_target, Duration::from_secs(2)).expect("host -> environment");

        // An "outside" network: another namespace behind a routed veth, to check forwarding
        // and masquerading.
        let outside = NsThread::new();
        run(
            &tools.ip,
            &["-batch", "-"],
            Some(&format!(
                "link add {outside_if} type veth peer name eth0 netns {}\n\
                 addr add 10.215.0.1/30 dev {outside_if}\n\
                 link set dev {outside_if} up\n",
                outside.path.display()
            )),
        )
        .unwrap();
        output_in(
            &outside.path,
            &["ip", "addr", "add", "10.215.0.2/30", "dev", "eth0"],
        );
        output_in(&outside.path, &["ip", "link", "set", "eth0", "up"]);
        let outside_listener = outside.run(|| TcpListener::bind("10.215.0.2:0").unwrap());
        let outside_target = SocketAddr::from((
            [10, 215, 0, 2],
            outside_listener.local_addr().unwrap().port(),
        ));
        let outside_accept =
            outside.spawn(move || accept_within(&outside_listener, Duration::from_secs(3)));

        // Host listeners: loopback, the gateway address, and every address.
        let host_lo = TcpListener::bind("127.0.0.1:0").unwrap();
        let host_gw = TcpListener::bind((gw, 0)).unwrap();
        let host_any = TcpListener::bind("0.0.0.0:0").unwrap();
        let any_port = host_any.local_addr().unwrap().port();
        let mut negatives = vec![
            (
                "A -> host 127.0.0.1",
                connect_from(&ns_a.path, host_lo.local_addr().unwrap()),
            ),
            (
                "A -> host gateway listener",
                connect_from(&ns_a.path, host_gw.local_addr().unwrap()),
            ),
            (
                "A -> host 0.0.0.0 listener via gateway",
                connect_from(&ns_a.path, SocketAddr::from((gw, any_port))),
            ),
            (
                "A -> host's outside-facing address",
                connect_from(&ns_a.path, SocketAddr::from(([10, 215, 0, 1], any_port))),
            ),
            ("B -> A", connect_from(&ns_b, a_target)),
            (
                "B -> host gateway listener",
                connect_from(&ns_b, host_gw.local_addr().unwrap()),
            ),
        ];
        // Host addresses on other interfaces (e.g. eth0) must be blocked too.
        let global = Command::new(&tools.ip)
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&global.stdout).lines() {
            let mut words = line.split_whitespace();
            let dev = words.nth(1).unwrap_or_default().to_owned();
            let Some(cidr) = words.nth(1) else { continue };
            if dev == name || dev == outside_if {
                continue;
            }
            if let Some(Ok(ip)) = cidr.split('/').next().map(str::parse::<Ipv4Addr>) {
                negatives.push((
                    "A -> host address on another interface",
                    connect_from(&ns_a.path, SocketAddr::from((ip, any_port))),
                ));
            }
        }
        let mut positive = connect_from(&ns_a.path, outside_target);

        assert!(
            positive.wait().unwrap().success(),
            "A -> outside through NAT"
        );
        let peer = outside_accept
            .recv()
            .unwrap()
            .expect("outside saw the connection");
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::from([10, 215, 0, 1]),
            "masqueraded"
        );
        for (what, mut child) in negatives {
            let status = child.wait().unwrap();
            assert!(!status.success(), "{what} must not connect");
        }
        // Nothing reached the host listeners.
        for l in [&host_lo, &host_gw, &host_any] {
            assert!(accept_within(l, Duration::from_millis(1)).is_none());
        }
        drop(listener_a);

        veth_b.release();
        assert!(!interface_exists(&veth_b.host_ifname));
        veth_b.release(); // already gone: harmless

        bridge.teardown();
        assert!(!interface_exists(&name));
        for table in [
            ["list", "table", "inet", &filter_table_name(&name)],
            ["list", "table", "ip", &nat_table_name(&name)],
        ] {
            let st = Command::new(&tools.nft).args(table).output().unwrap();
            assert!(!st.status.success(), "{table:?} still exists");
        }
        bridge.teardown(); // idempotent
        drop(outside);
        drop(ns_a);
        drop(cleanup);
        eprintln!("whole test took {:?}", started.elapsed());
    }
}
