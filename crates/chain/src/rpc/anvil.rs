//! A local anvil node for tests and benchmarks: the pinned binary from the npm package
//! `@foundry-rs/anvil-linux-amd64` (`tools/anvil`), started on a free 127.0.0.1 port and
//! killed by its PID when dropped.
//!
//! The binary is found through `ENTRADA_ANVIL` (a path) or in `tools/anvil/node_modules`.
//! A missing binary is an error naming the install command: a JSON-RPC suite that silently
//! skipped would prove nothing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The install command a missing binary asks for.
pub const INSTALL_HINT: &str = "npm ci --prefix tools/anvil (or set ENTRADA_ANVIL to an anvil binary)";

/// anvil's well-known development keys (mnemonic `test … junk`, accounts 0–9). Public
/// knowledge: usable on a local development node only.
pub const DEV_KEYS: [&str; 10] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// anvil's default chain id.
pub const CHAIN_ID: u64 = 31_337;

/// A running anvil process. Dropping it kills the process (by PID) and reaps it.
pub struct Anvil {
    child: Child,
    port: u16,
}

impl Anvil {
    /// Where the anvil binary is: `ENTRADA_ANVIL`, else the pinned npm package.
    pub fn binary() -> Result<PathBuf, String> {
        if let Some(path) = std::env::var_os("ENTRADA_ANVIL") {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("ENTRADA_ANVIL={} is not a file; install anvil with: {INSTALL_HINT}", path.display()))
            };
        }
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("anvil is not installed ({} is missing); install it with: {INSTALL_HINT}", path.display()))
        }
    }

    /// Starts anvil on a free port of 127.0.0.1 with the platform's settings (Prague rules,
    /// 60 M block gas limit, like the embedded chain) plus `extra` arguments, and waits until
    /// it accepts connections.
    pub fn spawn(extra: &[&str]) -> Result<Self, String> {
        let binary = Self::binary()?;
        // A port found free can be taken by someone else before anvil binds it: try again.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let child = Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--hardfork", "prague", "--gas-limit", "60000000", "--chain-id", &CHAIN_ID.to_string()])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", binary.display()))?;
            let mut anvil = Anvil { child, port };
            match anvil.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(anvil),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("anvil exited at start ({status}) on port {}", self.port));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!("anvil did not answer on {addr} within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the node (SIGSTOP): connections are accepted by the kernel but nothing answers,
    /// which is what a hung node looks like to a client. Returns once the kernel reports the
    /// process stopped (a signal takes effect asynchronously).
    pub fn pause(&self) -> Result<(), String> {
        self.signal("-STOP")?;
        self.wait_state(true)
    }

    /// Lets a paused node run again (SIGCONT), returning once it is no longer stopped.
    pub fn resume(&self) -> Result<(), String> {
        self.signal("-CONT")?;
        self.wait_state(false)
    }

    /// Waits until `/proc/PID/status` says the process is (or is no longer) stopped.
    fn wait_state(&self, stopped: bool) -> Result<(), String> {
        let status = format!("/proc/{}/status", self.child.id());
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&status).map_err(|e| format!("{status}: {e}"))?;
            let is_stopped = text.lines().any(|l| l.starts_with("State:") && l.contains("T ("));
            if is_stopped == stopped {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "anvil {} did not {} within 10 s",
                    self.child.id(),
                    if stopped { "stop" } else { "resume" }
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn signal(&self, sig: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .map_err(|e| format!("kill {sig}: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("kill {sig} {} failed: {status}", self.child.id())) }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // A stopped process still dies of SIGKILL; `wait` reaps it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("finding a free port: {e}"))
}
