//! One chain behaviour suite, two chains: [`TestChain`] is either the embedded revm chain or
//! an [`RpcChain`] on a fresh anvil node, and `on_both_chains!` instantiates a test body
//! for each (`<test>::embedded`, `<test>::anvil`).
//!
//! Platform calls go through `ChainClient` (the `Deref` target); arbitrary senders (holders,
//! strangers, a hostile contract's deployer) go through [`TestChain::send`], which on anvil
//! impersonates the address and funds it with gas money.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use entrada_chain::rpc::anvil::{self, Anvil};
use entrada_chain::{
    Address, Bytes, ChainClient, ChainError, EmbeddedChain, Receipt, RoleKeys, RpcChain, RpcConfig, U256,
};
use entrada_primitives::{ManualClock, Secret, SharedClock};

use crate::START;

/// A chain under test.
pub struct TestChain {
    client: Arc<dyn ChainClient>,
    factory: Address,
    backend: Backend,
}

pub enum Backend {
    Embedded { chain: EmbeddedChain, clock: ManualClock },
    Anvil { chain: RpcChain, _node: Anvil, funded: Mutex<HashSet<Address>> },
}

/// Spawns anvil at `START` or fails with the install command.
pub fn spawn_anvil() -> Anvil {
    let start = START.to_string();
    Anvil::spawn(&["--timestamp", &start]).unwrap_or_else(|e| panic!("{e}"))
}

/// The platform's keys on anvil: one dev account per role, so every role has its own nonces.
pub fn role_keys() -> RoleKeys {
    let k = |i: usize| Secret::new(anvil::DEV_KEYS[i].to_owned());
    RoleKeys { admin: k(0), minter: k(1), custodian: k(2), organizer: k(3) }
}

/// A client configuration for `node` that polls fast (tests wait on a local node).
pub fn rpc_config(node: &Anvil) -> RpcConfig {
    let mut cfg = RpcConfig::new(node.url(), anvil::CHAIN_ID, role_keys());
    cfg.poll_interval = StdDuration::from_millis(10);
    cfg.request_timeout = StdDuration::from_secs(10);
    cfg.receipt_timeout = StdDuration::from_secs(30);
    cfg
}

impl TestChain {
    pub async fn embedded() -> Self {
        let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(START as i64).unwrap());
        let shared: SharedClock = Arc::new(clock.clone());
        let chain = EmbeddedChain::in_memory(shared).expect("embedded chain");
        Self { client: Arc::new(chain.clone()), factory: chain.factory(), backend: Backend::Embedded { chain, clock } }
    }

    pub async fn anvil() -> Self {
        let node = spawn_anvil();
        let chain = RpcChain::connect(rpc_config(&node)).await.expect("connect to anvil");
        let factory = chain.ensure_factory().await.expect("deploy the factory");
        Self {
            client: Arc::new(chain.clone()),
            factory,
            backend: Backend::Anvil { chain, _node: node, funded: Mutex::new(HashSet::new()) },
        }
    }

    pub fn factory(&self) -> Address {
        self.factory
    }

    /// Sends `data` as any account.
    pub async fn transact_as(&self, from: Address, to: Option<Address>, data: Bytes) -> Result<Receipt, ChainError> {
        match &self.backend {
            Backend::Embedded { chain, .. } => match to {
                Some(to) => chain.transact_as(from, to, data).await,
                None => chain.deploy_as(from, data).await,
            },
            Backend::Anvil { chain, funded, .. } => {
                let roles = chain.roles();
                let platform = [roles.admin, roles.minter, roles.custodian, roles.organizer];
                let first = !platform.contains(&from) && funded.lock().unwrap().insert(from);
                if first {
                    let p = chain.provider();
                    let _: () = p.raw_request("anvil_impersonateAccount".into(), (from,)).await.unwrap();
                    let wei = U256::from(10u64).pow(U256::from(21u64));
                    let _: () = p.raw_request("anvil_setBalance".into(), (from, wei)).await.unwrap();
                }
                chain.send_as(from, to, data).await
            }
        }
    }

    /// A typed call sent as any account.
    pub async fn send<C: SolCall>(&self, from: Address, to: Address, call: C) -> Result<Receipt, ChainError> {
        self.transact_as(from, Some(to), call.abi_encode().into()).await
    }

    pub async fn deploy_as(&self, from: Address, initcode: Bytes) -> Result<Receipt, ChainError> {
        self.transact_as(from, None, initcode).await
    }

    /// A typed read-only call.
    pub async fn view<C: SolCall + Send + 'static>(&self, to: Address, call: C) -> Result<C::Return, ChainError> {
        match &self.backend {
            Backend::Embedded { chain, .. } => chain.view(to, call).await,
            Backend::Anvil { chain, .. } => chain.view(to, call).await,
        }
    }

    /// Moves the chain's time forward: the manual clock on the embedded chain;
    /// `evm_increaseTime` and a new block on anvil.
    pub async fn advance(&self, by: time::Duration) {
        match &self.backend {
            Backend::Embedded { clock, .. } => clock.advance(by),
            Backend::Anvil { chain, .. } => {
                let p = chain.provider();
                let _: serde_json::Value =
                    p.raw_request("evm_increaseTime".into(), (by.whole_seconds(),)).await.unwrap();
                let _: serde_json::Value = p.raw_request("evm_mine".into(), ()).await.unwrap();
            }
        }
    }
}

impl Deref for TestChain {
    type Target = dyn ChainClient;

    fn deref(&self) -> &Self::Target {
        &*self.client
    }
}

/// `on_both_chains!(name, …)`: for each `async fn name(chain: TestChain)`, a module `name`
/// with the tests `embedded` and `anvil`.
#[macro_export]
macro_rules! on_both_chains {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn embedded() {
                    super::$name($crate::harness::TestChain::embedded().await).await
                }

                #[tokio::test]
                async fn anvil() {
                    super::$name($crate::harness::TestChain::anvil().await).await
                }
            }
        )*
    };
}
