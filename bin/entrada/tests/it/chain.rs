//! Tickets as tokens, through the whole app on the embedded chain: a bought ticket is minted
//! to its holder's address, many purchases share few transactions, a refund burns, the
//! reconciler repairs what the chain lost, and a chain outage stops neither sales nor entry.

use crate::checkin::{gate, phone, scan};
use crate::helpers::*;
use entrada_chain::{
    Address, B256, ChainClient, ChainError, CollectionParams, EmbeddedChain, Mint, PlatformRoles, Receipt, U256,
};
use entrada_gateway::App;
use entrada_primitives::Clock as _;
use entrada_primitives::ids::UserId;
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// An app over the real embedded chain behind an [`Outage`] switch, starting `down` or not.
async fn spawn_app_with_outage(
    tweak: impl FnOnce(&mut entrada_gateway::Config),
    down: bool,
) -> (TestApp, Arc<AtomicBool>) {
    let switch = Arc::new(AtomicBool::new(down));
    let d = switch.clone();
    let app = spawn_app_on_chain(tweak, move |dir, clock| {
        let real: Arc<dyn ChainClient> = Arc::new(EmbeddedChain::open(dir, clock).unwrap());
        Some(Arc::new(Outage { inner: real, down: d }) as Arc<dyn ChainClient>)
    })
    .await;
    (app, switch)
}

/// The real embedded chain behind a switch: while `down` is set every call fails as an
/// unreachable node would (`Unavailable`), and nothing reaches the chain.
struct Outage {
    inner: Arc<dyn ChainClient>,
    down: Arc<AtomicBool>,
}

impl Outage {
    fn check(&self) -> Result<(), ChainError> {
        if self.down.load(Ordering::SeqCst) { Err(ChainError::Unavailable("injected outage".into())) } else { Ok(()) }
    }
}

#[async_trait::async_trait]
impl ChainClient for Outage {
    fn chain_id(&self) -> u64 {
        self.inner.chain_id()
    }
    fn roles(&self) -> PlatformRoles {
        self.inner.roles()
    }
    async fn ensure_factory(&self) -> Result<Address, ChainError> {
        self.check()?;
        self.inner.ensure_factory().await
    }
    async fn block_number(&self) -> Result<u64, ChainError> {
        self.check()?;
        self.inner.block_number().await
    }
    async fn predict_collection(&self, key: B256) -> Result<Address, ChainError> {
        self.check()?;
        self.inner.predict_collection(key).await
    }
    async fn collection_of(&self, key: B256) -> Result<Option<Address>, ChainError> {
        self.check()?;
        self.inner.collection_of(key).await
    }
    async fn create_collection(&self, key: B256, p: &CollectionParams) -> Result<(Address, Receipt), ChainError> {
        self.check()?;
        self.inner.create_collection(key, p).await
    }
    async fn mint_batch(&self, c: Address, mints: &[Mint]) -> Result<Receipt, ChainError> {
        self.check()?;
        self.inner.mint_batch(c, mints).await
    }
    async fn transfer(&self, c: Address, from: Address, to: Address, id: U256) -> Result<Receipt, ChainError> {
        self.check()?;
        self.inner.transfer(c, from, to, id).await
    }
    async fn burn(&self, c: Address, id: U256) -> Result<Receipt, ChainError> {
        self.check()?;
        self.inner.burn(c, id).await
    }
    async fn mark_attended(&self, c: Address, ids: &[U256]) -> Result<Receipt, ChainError> {
        self.check()?;
        self.inner.mark_attended(c, ids).await
    }
    async fn set_transfer_policy(&self, c: Address, locked: bool, end: u64) -> Result<Receipt, ChainError> {
        self.check()?;
        self.inner.set_transfer_policy(c, locked, end).await
    }
    async fn set_default_royalty(&self, c: Address, to: Address, bps: u16) -> Result<Receipt, ChainError> {
        self.check()?;
        self.inner.set_default_royalty(c, to, bps).await
    }
    async fn owner_of(&self, c: Address, id: U256) -> Result<Option<Address>, ChainError> {
        self.check()?;
        self.inner.owner_of(c, id).await
    }
    async fn balance_of(&self, c: Address, holder: Address) -> Result<u64, ChainError> {
        self.check()?;
        self.inner.balance_of(c, holder).await
    }
    async fn total_supply(&self, c: Address) -> Result<u64, ChainError> {
        self.check()?;
        self.inner.total_supply(c).await
    }
    async fn token_uri(&self, c: Address, id: U256) -> Result<String, ChainError> {
        self.check()?;
        self.inner.token_uri(c, id).await
    }
    async fn transfers_locked(&self, c: Address) -> Result<bool, ChainError> {
        self.check()?;
        self.inner.transfers_locked(c).await
    }
    async fn receipt(&self, h: B256) -> Result<Option<Receipt>, ChainError> {
        self.check()?;
        self.inner.receipt(h).await
    }
}

/// The caller's tickets as the API shows them.
async fn my_tickets(app: &TestApp, fan: &User) -> Vec<Value> {
    let page = app.get("/api/v1/me/tickets?limit=200", Some(&fan.token)).await.expect(200);
    page["items"].as_array().unwrap().clone()
}

fn addr(v: &Value) -> Address {
    Address::from_str(v.as_str().unwrap()).unwrap()
}

fn token(v: &Value) -> U256 {
    U256::from_str(v["chain"]["token_id"].as_str().unwrap()).unwrap()
}

async fn holder_address(app: &TestApp, fan: &User) -> Address {
    app.app.chain.custodial_address(UserId::from_str(&fan.id).unwrap()).await.unwrap()
}

/// Pays without settling: hold, order, sandbox payment.
async fn pay_only(app: &TestApp, fan: &User, event: &str, tt: &str, qty: i64) -> String {
    let hold = app.hold(fan, event, tt, qty).await.expect(201);
    let order = app.order(fan, hold["id"].as_str().unwrap(), None).await.expect(201);
    app.pay(order["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    order["id"].as_str().unwrap().to_owned()
}

/// A bought ticket becomes a token on the embedded chain, owned by the holder's custodial
/// address; the ticket API shows network, contract, token id and transaction, and the token
/// points at the deployment's metadata.
#[tokio::test]
async fn a_bought_ticket_is_minted_to_its_holder() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &tt, 2).await;

    let tickets = my_tickets(&app, &fan).await;
    assert_eq!(tickets.len(), 2);
    let owner = holder_address(&app, &fan).await;
    let chain = app.app.chain.chain();
    let contract = addr(&tickets[0]["chain"]["contract"]);
    for t in &tickets {
        let c = &t["chain"];
        assert_eq!(c["network"], "embedded", "{t:#}");
        assert_eq!(c["chain_id"], 1337);
        assert_eq!(c["status"], "confirmed", "{t:#}");
        assert_eq!(c["token_id"], t["serial"].as_i64().unwrap().to_string());
        assert!(c["tx_hash"].as_str().unwrap().starts_with("0x"));
        assert_eq!(addr(&c["owner"]), owner);
        assert_eq!(chain.owner_of(contract, token(t)).await.unwrap(), Some(owner));
        let uri = chain.token_uri(contract, token(t)).await.unwrap();
        assert_eq!(uri, format!("{}/api/v1/nft/{event}/{}", app.base, token(t)));
    }
    assert_eq!(chain.total_supply(contract).await.unwrap(), 2);
    assert_eq!(tickets[0]["chain"]["tx_hash"], tickets[1]["chain"]["tx_hash"], "one order, one transaction");
    // Transfers stay with the platform's custodian while the event is upcoming.
    assert!(chain.transfers_locked(contract).await.unwrap());

    // The single-ticket view says the same; another fan sees nothing.
    let id = tickets[0]["id"].as_str().unwrap();
    let one = app.get(&format!("/api/v1/me/tickets/{id}"), Some(&fan.token)).await.expect(200);
    assert_eq!(one["chain"], tickets[0]["chain"]);
    let other = app.register("other@example.com").await;
    app.get(&format!("/api/v1/me/tickets/{id}"), Some(&other.token)).await.expect_problem(404, "not_found");
    app.get("/api/v1/me/tickets/not-a-uuid", Some(&fan.token)).await.expect_problem(404, "not_found");
}

/// Thirty buyers paying before the pipeline runs share one transaction; with batches of ten,
/// twenty-five tickets take three. Every ticket is minted once.
#[tokio::test]
async fn many_purchases_share_few_transactions() {
    let app = spawn_app_with(|c| c.chain.batch_size = 10).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 100).await;
    let mut fans = Vec::new();
    for i in 0..25 {
        let fan = app.register(&format!("fan{i}@example.com")).await;
        pay_only(&app, &fan, &event, &tt, 1).await;
        fans.push(fan);
    }
    app.settle().await;
    let mut hashes = std::collections::BTreeSet::new();
    let mut contract = None;
    for fan in &fans {
        let t = &my_tickets(&app, fan).await[0];
        assert_eq!(t["chain"]["status"], "confirmed", "{t:#}");
        assert_eq!(addr(&t["chain"]["owner"]), holder_address(&app, fan).await);
        hashes.insert(t["chain"]["tx_hash"].as_str().unwrap().to_owned());
        contract = Some(addr(&t["chain"]["contract"]));
    }
    assert_eq!(hashes.len(), 3, "25 tickets in batches of 10");
    assert_eq!(app.app.chain.chain().total_supply(contract.unwrap()).await.unwrap(), 25);
}

/// A gate's admissions are marked attended on chain together: twelve check-ins with batches of
/// five take three transactions, and every admitted token, and only those, turns attended.
/// Marks sent while the chain was unreachable are settled by reading every token of the
/// batch, then sent again.
#[tokio::test]
async fn admissions_are_marked_attended_in_shared_transactions() {
    let (app, down) = spawn_app_with_outage(|c| c.chain.batch_size = 5, false).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 20).await;
    let g = gate(&app, &org_user, &event).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &tt, 7).await;
    app.buy(&fan, &event, &tt, 7).await;
    app.settle().await;
    let tickets = my_tickets(&app, &fan).await;
    let admitted: Vec<String> = tickets.iter().take(12).map(|t| t["id"].as_str().unwrap().to_owned()).collect();
    for ticket in &admitted[..4] {
        let p = phone(&app, &fan, ticket).await;
        let v = scan(&app, &g, &p.qr(app.clock.now().unix_timestamp())).await;
        assert_eq!(v["ok"], true, "{v:#}");
    }
    // The chain is unreachable when the first four marks go out: their transaction's outcome
    // is unknown, and nothing is marked.
    down.store(true, Ordering::SeqCst);
    app.settle().await;
    let (unknown,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM chain_transactions WHERE kind = 'attend' AND state = 'unknown'")
            .fetch_one(app.app.db.reader())
            .await
            .unwrap();
    assert_eq!(unknown, 1);
    down.store(false, Ordering::SeqCst);
    for ticket in &admitted[4..] {
        let p = phone(&app, &fan, ticket).await;
        let v = scan(&app, &g, &p.qr(app.clock.now().unix_timestamp())).await;
        assert_eq!(v["ok"], true, "{v:#}");
    }
    app.clock.advance(time::Duration::minutes(10));
    app.settle().await;
    let chain = app.app.chain.chain().clone();
    let contract = addr(&tickets[0]["chain"]["contract"]);
    for t in &tickets {
        let uri = chain.token_uri(contract, token(t)).await.unwrap();
        assert_eq!(uri.ends_with("/attended"), admitted.iter().any(|a| t["id"] == a.as_str()), "{uri}");
    }
    let (sent,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM chain_transactions WHERE kind = 'attend' AND state = 'confirmed'")
            .fetch_one(app.app.db.reader())
            .await
            .unwrap();
    assert_eq!(sent, 3, "12 marks in batches of 5, the four unknown ones among them");
    let (done,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM chain_ops WHERE kind = 'attend' AND state = 'done' AND tx_hash IS NOT NULL",
    )
    .fetch_one(app.app.db.reader())
    .await
    .unwrap();
    assert_eq!(done, 12);
}

/// The organizer's later changes reach the collection: allowing exports frees its tokens,
/// withdrawing it locks them again, a moved event end moves the contract's, and a new resale
/// royalty becomes the collection's ERC-2981 royalty. Each change is one transaction, audited,
/// and nothing is sent while nothing changed.
#[tokio::test]
async fn export_setting_event_end_and_royalty_changes_reach_the_collection() {
    let slot = Arc::new(std::sync::Mutex::new(None));
    let keep = slot.clone();
    let app = spawn_app_on_chain(
        |_| {},
        move |dir, clock| {
            let chain = EmbeddedChain::open(dir, clock).unwrap();
            *keep.lock().unwrap() = Some(chain.clone());
            Some(Arc::new(chain) as Arc<dyn ChainClient>)
        },
    )
    .await;
    let embedded: EmbeddedChain = slot.lock().unwrap().clone().unwrap();
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &tt, 1).await;
    let contract = addr(&my_tickets(&app, &fan).await[0]["chain"]["contract"]);
    let chain = app.app.chain.chain().clone();
    assert!(chain.transfers_locked(contract).await.unwrap(), "locked: exports are not allowed");
    let policy = || async {
        let row: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT CASE WHEN policy_locked THEN 1 ELSE 0 END, policy_end FROM chain_collections WHERE event_id = $1",
        )
        .bind(event.clone())
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
        row
    };
    let ends = time::macros::datetime!(2030-04-01 23:00 UTC).unix_timestamp();
    assert_eq!(policy().await, (Some(1), Some(ends)), "recorded at creation");
    let audited = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'chain.policy_set'")
            .fetch_one(app.app.db.reader())
            .await
            .unwrap();
        n
    };
    app.settle().await;
    assert_eq!(audited().await, 0, "nothing sent while nothing changed");

    let path = format!("/api/v1/events/{event}");
    app.patch(&path, Some(&org_user.token), json!({"resale_policy": {"export_allowed": true}})).await.expect(200);
    app.settle().await;
    assert!(!chain.transfers_locked(contract).await.unwrap(), "exports allowed: tokens move freely");
    assert_eq!(policy().await, (Some(0), Some(ends)));
    assert_eq!(audited().await, 1);

    app.patch(&path, Some(&org_user.token), json!({"resale_policy": {"export_allowed": false}})).await.expect(200);
    app.patch(&path, Some(&org_user.token), json!({"ends_at": "2030-04-02T01:00:00Z"})).await.expect(200);
    app.settle().await;
    assert!(chain.transfers_locked(contract).await.unwrap(), "locked again");
    let later = time::macros::datetime!(2030-04-02 01:00 UTC).unix_timestamp();
    assert_eq!(policy().await, (Some(1), Some(later)));
    assert_eq!(audited().await, 2, "both changes in one transaction");

    let royalty = || async {
        let call = entrada_chain::contracts::EventTickets::royaltyInfoCall {
            tokenId: U256::from(1u64),
            salePrice: U256::from(10_000u64),
        };
        embedded.view(contract, call).await.unwrap().amount
    };
    let before = royalty().await;
    app.patch(&path, Some(&org_user.token), json!({"resale_policy": {"royalty_bps": 850}})).await.expect(200);
    app.settle().await;
    assert_ne!(before, U256::from(850u64));
    assert_eq!(royalty().await, U256::from(850u64), "8.5 % of a 10,000 sale");
    assert_eq!(audited().await, 3);
}

/// A platform user with `role`, logged in again so the token carries it.
async fn staff(app: &TestApp, email: &str, role: entrada_primitives::PlatformRole) -> String {
    app.register(email).await;
    app.app.identity.grant_platform_role(&entrada_primitives::Email::parse(email).unwrap(), role).await.unwrap();
    let login = app
        .post("/api/v1/auth/login", None, json!({"email": email, "password": "correct horse battery"}))
        .await
        .expect(200);
    login["access_token"].as_str().unwrap().to_owned()
}

/// What the chain refuses for good is parked, listed for platform staff and put back in the
/// queue by an admin: here a token burned on chain behind the platform's back, which the
/// reconciler mints again and the contract refuses (a burned id is never minted twice).
#[tokio::test]
async fn refused_mints_are_parked_listed_for_staff_and_requeued_by_an_admin() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &tt, 1).await;
    let t = my_tickets(&app, &fan).await[0].clone();
    let ticket = t["id"].as_str().unwrap().to_owned();
    let chain = app.app.chain.chain().clone();
    chain.burn(addr(&t["chain"]["contract"]), token(&t)).await.unwrap();
    assert_eq!(app.app.chain.reconcile().await.unwrap().repaired, 1);
    for _ in 0..8 {
        app.clock.advance(time::Duration::minutes(10));
        app.settle().await;
    }
    // Hours later: the fan logs in again.
    let login = app
        .post("/api/v1/auth/login", None, json!({"email": fan.email, "password": "correct horse battery"}))
        .await
        .expect(200);
    let fan = User { token: login["access_token"].as_str().unwrap().to_owned(), ..fan };
    assert_eq!(my_tickets(&app, &fan).await[0]["chain"]["status"], "failed");

    let admin = staff(&app, "admin@example.com", entrada_primitives::PlatformRole::Admin).await;
    let support = staff(&app, "support@example.com", entrada_primitives::PlatformRole::Support).await;
    let list = "/api/v1/admin/chain/failures";
    let page = app.get(list, Some(&support)).await.expect(200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page:#}");
    assert_eq!(items[0]["kind"], "mint");
    assert_eq!(items[0]["ticket_id"], ticket.as_str());
    assert_eq!(items[0]["event_id"], event.as_str());
    assert!(items[0]["last_error"].as_str().unwrap().contains("TokenAlreadyBurned"), "{page:#}");

    // Fans see nothing; support looks but does not act; bad input is a problem, not a crash.
    assert_eq!(app.get(list, Some(&fan.token)).await.status, 403);
    assert_eq!(app.get(list, None).await.status, 401);
    assert_eq!(app.get(&format!("{list}?limit=0"), Some(&admin)).await.status, 422);
    let retry = format!("{list}/{ticket}/retry");
    assert_eq!(app.post(&retry, Some(&support), json!({})).await.status, 403);
    assert_eq!(app.post(&retry, Some(&fan.token), json!({})).await.status, 403);
    assert_eq!(app.post(&format!("{list}/not-a-ticket/retry"), Some(&admin), json!({})).await.status, 404);

    let r = app.post(&retry, Some(&admin), json!({})).await.expect(200);
    assert_eq!(r["requeued"], 1);
    assert_eq!(my_tickets(&app, &fan).await[0]["chain"]["status"], "pending");
    assert!(app.get(list, Some(&admin)).await.expect(200)["items"].as_array().unwrap().is_empty());
    assert_eq!(app.post(&retry, Some(&admin), json!({})).await.status, 404, "nothing parked any more");
    let (audited,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'chain.retry_requested' AND object_id = $1")
            .bind(ticket.clone())
            .fetch_one(app.app.db.reader())
            .await
            .unwrap();
    assert_eq!(audited, 1);
}

/// A refund burns a minted token; a ticket refunded before its mint was sent is never
/// minted at all.
#[tokio::test]
async fn a_refund_burns_the_token() {
    let (app, down) = spawn_app_with_outage(|_| {}, false).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let order = app.buy(&fan, &event, &tt, 1).await;
    let t = my_tickets(&app, &fan).await[0].clone();
    let contract = addr(&t["chain"]["contract"]);
    let chain = app.app.chain.chain().clone();
    assert_eq!(chain.owner_of(contract, token(&t)).await.unwrap(), Some(holder_address(&app, &fan).await));

    let refund = format!("/api/v1/orders/{}/refund", order["id"].as_str().unwrap());
    app.post(&refund, Some(&org_user.token), json!({})).await.expect(200);
    app.settle().await;
    let burned = my_tickets(&app, &fan).await[0].clone();
    assert_eq!(burned["status"], "cancelled");
    assert_eq!(burned["chain"]["status"], "burned", "{burned:#}");
    assert_ne!(burned["chain"]["tx_hash"], t["chain"]["tx_hash"], "the burn's transaction is shown");
    assert_eq!(chain.owner_of(contract, token(&t)).await.unwrap(), None);

    // Bought and refunded while the chain is unreachable: nothing is ever minted for it.
    down.store(true, Ordering::SeqCst);
    let late = app.buy(&fan, &event, &tt, 1).await;
    app.post(&format!("/api/v1/orders/{}/refund", late["id"].as_str().unwrap()), Some(&org_user.token), json!({}))
        .await
        .expect(200);
    app.settle().await;
    down.store(false, Ordering::SeqCst);
    app.clock.advance(time::Duration::minutes(10));
    app.settle().await;
    let tickets = my_tickets(&app, &fan).await;
    let never = tickets.iter().find(|x| x["order_id"] == late["id"]).unwrap();
    assert_eq!(never["chain"]["status"], "burned", "{never:#}");
    assert_eq!(never["chain"]["tx_hash"], Value::Null);
    assert_eq!(chain.owner_of(contract, token(never)).await.unwrap(), None);
    assert_eq!(chain.total_supply(contract).await.unwrap(), 0);
}

/// While the chain is unreachable, fans still buy and get in; the tokens wait, then are
/// minted once the chain is back, and an admitted ticket's token is marked attended.
#[tokio::test]
async fn a_chain_outage_stops_neither_sales_nor_entry() {
    let (app, down) = spawn_app_with_outage(|_| {}, true).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let g = gate(&app, &org_user, &event).await;
    let fan = app.register("fan@example.com").await;
    let order = app.buy(&fan, &event, &tt, 3).await;
    assert_eq!(order["status"], "paid", "the sale does not wait for the chain");
    let tickets = my_tickets(&app, &fan).await;
    assert_eq!(tickets.len(), 3);
    for t in &tickets {
        assert_eq!(t["status"], "valid");
        assert_eq!(t["chain"]["status"], "pending", "{t:#}");
        assert_eq!(t["chain"]["tx_hash"], Value::Null);
    }
    // Entry does not wait either.
    let ticket = tickets[0]["id"].as_str().unwrap().to_owned();
    let p = phone(&app, &fan, &ticket).await;
    let v = scan(&app, &g, &p.qr(app.clock.now().unix_timestamp())).await;
    assert_eq!(v["ok"], true, "{v:#}");

    // The chain comes back; after the backoff the tokens are minted, the admitted one marked.
    down.store(false, Ordering::SeqCst);
    app.clock.advance(time::Duration::minutes(10));
    app.settle().await;
    let owner = holder_address(&app, &fan).await;
    let chain = app.app.chain.chain().clone();
    let after = my_tickets(&app, &fan).await;
    let contract = addr(&after[0]["chain"]["contract"]);
    for t in &after {
        assert_eq!(t["chain"]["status"], "confirmed", "{t:#}");
        assert_eq!(chain.owner_of(contract, token(t)).await.unwrap(), Some(owner));
        let uri = chain.token_uri(contract, token(t)).await.unwrap();
        assert_eq!(uri.ends_with("/attended"), t["id"] == ticket.as_str(), "{uri}");
    }
    assert_eq!(chain.total_supply(contract).await.unwrap(), 3);
}

/// The reconciler finds what the chain lost and what moved behind the platform's back: the
/// chain's state is rolled back past a mint (a reset development chain, a reorg), and a token
/// is moved away from its holder; a pass queues the repairs and the next rounds make them.
#[tokio::test]
async fn the_reconciler_repairs_a_lost_mint_and_a_wrong_owner() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let other = app.register("other@example.com").await;
    app.buy(&fan, &event, &tt, 1).await;
    // The chain's files: its snapshot and the journal of blocks since.
    let files = ["chain-state.json", "chain-journal.jsonl"].map(|f| app.data_dir.path().join(f));
    let before_second = files.clone().map(|f| std::fs::read(f).unwrap_or_default());
    app.buy(&other, &event, &tt, 1).await;
    let second = my_tickets(&app, &other).await[0].clone();
    assert_eq!(second["chain"]["status"], "confirmed");

    // A second process over the same database, whose chain lost the second mint.
    for (file, bytes) in files.iter().zip(before_second) {
        std::fs::write(file, bytes).unwrap();
    }
    let shared: entrada_primitives::SharedClock = Arc::new(app.clock.clone());
    let embedded = EmbeddedChain::open(app.data_dir.path(), shared.clone()).unwrap();
    let restarted =
        App::build_with_chain(app.app.config.clone(), shared, Some(Arc::new(embedded.clone()))).await.unwrap();
    let contract = addr(&second["chain"]["contract"]);
    assert_eq!(embedded.owner_of(contract, token(&second)).await.unwrap(), None, "the chain lost it");
    let found = restarted.chain.reconcile().await.unwrap();
    assert_eq!(found.repaired, 1, "{found:?}");
    restarted.settle().await.unwrap();
    let other_addr = holder_address(&app, &other).await;
    assert_eq!(embedded.owner_of(contract, token(&second)).await.unwrap(), Some(other_addr));
    assert_eq!(embedded.total_supply(contract).await.unwrap(), 2);

    // The first fan's token is moved to a stranger by the custodian key, outside the pipeline.
    let first = my_tickets(&app, &fan).await[0].clone();
    let fan_addr = holder_address(&app, &fan).await;
    let custodian = EmbeddedChain::platform_roles().custodian;
    let stranger = Address::repeat_byte(0x77);
    let call = entrada_chain::contracts::EventTickets::transferFromCall {
        from: fan_addr,
        to: stranger,
        tokenId: token(&first),
    };
    embedded.send(custodian, contract, call).await.unwrap();
    let found = restarted.chain.reconcile().await.unwrap();
    assert_eq!(found.repaired, 1, "{found:?}");
    restarted.settle().await.unwrap();
    assert_eq!(embedded.owner_of(contract, token(&first)).await.unwrap(), Some(fan_addr));
    let clean = restarted.chain.reconcile().await.unwrap();
    assert_eq!((clean.repaired, clean.checked), (0, 2), "nothing left to repair");
}

/// Kill the real binary three times at random points while fans buy and its worker mints in
/// batches of five; after the last restart every ticket is minted exactly once, to its holder,
/// and the collection's supply equals the number of tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_during_minting_mints_every_ticket_once() {
    use crate::crash::{Lcg, kill, post, server_env};
    use std::sync::atomic::AtomicU64;
    let seed = std::env::var("ENTRADA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(11)
    });
    println!("mint crash test seed: {seed} (ENTRADA_CRASH_SEED={seed} repeats it)");
    let mut rng = Lcg(seed);
    let (db_url, _db_dir) = entrada_storage::testing::fresh_url().await;
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let log = ServerLog::default();
    let start = || {
        let mut env = server_env(&db_url, data.path(), port);
        env.push(("ENTRADA_CHAIN__BATCH_SIZE", "5".into()));
        env.push(("ENTRADA_CHAIN__BATCH_WINDOW_MS", "20".into()));
        env.push(("ENTRADA_CHAIN__TICK_MS", "5".into()));
        env.push(("ENTRADA_LOG", "warn".into()));
        let log = log.clone();
        async move { spawn_entrada_logged(&["serve"], &env, Some(log)).await }
    };
    let mut server = start().await;

    let reg = |email: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = json!({"email": email, "password": "mint crash password", "display_name": "x"});
            let (s, b) = post(&http, format!("{base}/api/v1/auth/register"), None, body).await.unwrap();
            assert_eq!(s, 201, "{b}");
            b["access_token"].as_str().unwrap().to_owned()
        }
    };
    let org_token = reg("org@example.com".into()).await;
    let body = json!({"name": "M", "slug": "mint-crash"});
    let (_, org) = post(&http, format!("{base}/api/v1/organizations"), Some(&org_token), body).await.unwrap();
    let org = org["id"].as_str().unwrap().to_owned();
    let starts = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let rfc = entrada_primitives::clock::rfc3339;
    let body = json!({"name": "Mint Crash", "venue": {"name": "V"}, "timezone": "UTC", "starts_at": rfc(starts),
        "ends_at": rfc(starts + time::Duration::hours(3)), "capacity": 20000, "currency": "EUR"});
    let (s, ev) =
        post(&http, format!("{base}/api/v1/organizations/{org}/events"), Some(&org_token), body).await.unwrap();
    assert_eq!(s, 201, "{ev}");
    let event = ev["id"].as_str().unwrap().to_owned();
    let body = json!({"name": "G", "price": {"amount_minor": 1000, "currency": "EUR"}});
    let (_, tt) =
        post(&http, format!("{base}/api/v1/events/{event}/ticket-types"), Some(&org_token), body).await.unwrap();
    let tt = tt["id"].as_str().unwrap().to_owned();
    for step in ["publish", "open-sales"] {
        let (s, b) =
            post(&http, format!("{base}/api/v1/events/{event}/{step}"), Some(&org_token), json!({})).await.unwrap();
        assert_eq!(s, 200, "{step}: {b}");
    }
    let mut fans = Vec::new();
    for i in 0..6 {
        fans.push(reg(format!("fan{i}@example.com")).await);
    }

    let steps = Arc::new(AtomicU64::new(0));
    // Tokens the server's worker has confirmed, read from the database beside the running
    // server: a round ends only after something new was minted, so kills land while minting
    // is under way. (A fan's ticket page lists the newest first, which a busy sale keeps
    // ahead of the mints.)
    let watch = entrada_storage::Db::connect(&entrada_storage::DbConfig { url: db_url.clone(), max_connections: 1 })
        .await
        .unwrap();
    let minted = || async {
        sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM chain_tokens WHERE state = 'confirmed'")
            .fetch_one(watch.reader())
            .await
            .map_or(0, |(n,)| n)
    };
    let progress = Arc::new(tokio::sync::Notify::new());
    // What a fan last failed at: a round that makes no progress says why.
    let failure = Arc::new(std::sync::Mutex::new(String::new()));
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for token in fans.clone() {
            let (http, base, event, tt) = (http.clone(), base.clone(), event.clone(), tt.clone());
            let (stop, steps, progress) = (stop.clone(), steps.clone(), progress.clone());
            let failure = failure.clone();
            let failed = move |what: String| *failure.lock().unwrap_or_else(|p| p.into_inner()) = what;
            // Every failure is noted and the fan tries again: a request cut by the kill
            // fails too, and `stop` ends the loop right after it.
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let hold = json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": 2}]});
                    let (s, hold) = match post(&http, format!("{base}/api/v1/holds"), Some(&token), hold).await {
                        Ok(r) => r,
                        Err(e) => {
                            failed(format!("hold: {e}"));
                            continue;
                        }
                    };
                    if s != 201 {
                        failed(format!("hold: {s} {hold}"));
                        continue;
                    }
                    let order = json!({"hold_id": hold["id"]});
                    let (s, order) = match post(&http, format!("{base}/api/v1/orders"), Some(&token), order).await {
                        Ok(r) => r,
                        Err(e) => {
                            failed(format!("order: {e}"));
                            continue;
                        }
                    };
                    let Some(url) = order["checkout_url"].as_str().filter(|_| s == 201) else {
                        failed(format!("order: {s} {order}"));
                        continue;
                    };
                    match post(&http, url.to_owned(), None, json!({"card": "4242424242424242"})).await {
                        Ok((s, b)) if s >= 400 => failed(format!("checkout: {s} {b}")),
                        Ok(_) => {}
                        Err(e) => {
                            failed(format!("checkout: {e}"));
                            continue;
                        }
                    }
                    steps.fetch_add(1, Ordering::SeqCst);
                    progress.notify_one();
                }
            }));
        }
        let target = steps.load(Ordering::SeqCst) + 5 + rng.next(25);
        let minted_before = minted().await;
        // Bounded, so a server that stopped minting fails the test instead of hanging it.
        let waited = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            while steps.load(Ordering::SeqCst) < target || minted().await <= minted_before {
                progress.notified().await;
            }
        })
        .await;
        if waited.is_err() {
            let state = pipeline_state(&db_url).await;
            let said = log.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n");
            let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
            panic!(
                "round {round}: no new token minted by the running server after {} payments ({} confirmed)\n\
                 last fan failure: {failed}\nstate: {state}\nserver said:\n{said}",
                steps.load(Ordering::SeqCst),
                minted().await,
            );
        }
        kill(server).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        println!(
            "round {round}: killed after {} payments, {} tokens confirmed",
            steps.load(Ordering::SeqCst),
            minted().await
        );
        server = start().await;
    }
    kill(server).await;

    // The last restart, in-process: everything due is delivered and every pending mint sent.
    let mut config = test_config(data.path(), &db_url);
    config.server.public_url = base.clone();
    config.payments.sandbox_webhook_secret = entrada_primitives::Secret::new("whsec_crash_test".into());
    let clock = entrada_primitives::ManualClock::new(time::OffsetDateTime::now_utc() + time::Duration::hours(2));
    let app = App::build(config, Arc::new(clock.clone())).await.unwrap();
    app.settle().await.unwrap();
    app.sales.expire_due().await.unwrap();
    app.settle().await.unwrap();
    let rec = app.chain.reconcile().await.unwrap();
    assert_eq!(rec.repaired, 0, "nothing to repair after a restart: {rec:?}");

    let db = app.db.reader();
    let tickets: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, holder_id, serial FROM tickets WHERE status = 'valid' ORDER BY serial")
            .fetch_all(db)
            .await
            .unwrap();
    assert!(!tickets.is_empty(), "the sale made progress between crashes");
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM chain_tokens GROUP BY state").fetch_all(db).await.unwrap();
    assert_eq!(states, vec![("confirmed".to_owned(), tickets.len() as i64)], "every ticket's token confirmed");
    let (address,): (String,) = sqlx::query_as("SELECT address FROM chain_collections WHERE event_id = $1")
        .bind(event.clone())
        .fetch_one(db)
        .await
        .unwrap();
    let contract = Address::from_str(&address).unwrap();
    let chain = app.chain.chain();
    assert_eq!(chain.total_supply(contract).await.unwrap(), tickets.len() as u64, "supply equals tickets");
    for (_, holder, serial) in &tickets {
        let owner = app.chain.custodial_address(UserId::from_str(holder).unwrap()).await.unwrap();
        assert_eq!(chain.owner_of(contract, U256::from(*serial as u64)).await.unwrap(), Some(owner));
    }
    let (sent,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM chain_transactions WHERE kind = 'mint_batch'")
        .fetch_one(db)
        .await
        .unwrap();
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM chain_transactions GROUP BY state ORDER BY state")
            .fetch_all(db)
            .await
            .unwrap();
    println!("after 3 crashes: {} tickets minted in {sent} mint transactions; {outcomes:?}", tickets.len());
}

/// Where a stalled sale or mint stands, read straight from the database: orders, tickets,
/// undelivered webhooks and outbox rows, collections and tokens, with their last errors.
async fn pipeline_state(db_url: &str) -> String {
    let Ok(db) =
        entrada_storage::Db::connect(&entrada_storage::DbConfig { url: db_url.into(), max_connections: 2 }).await
    else {
        return "database unreachable".into();
    };
    let db = db.reader();
    let counts = |sql: &'static str| async move {
        sqlx::query_as::<_, (String, i64)>(sql).fetch_all(db).await.map_or_else(|e| e.to_string(), |r| format!("{r:?}"))
    };
    let errors = |sql: &'static str| async move {
        sqlx::query_as::<_, (String, i64, String)>(sql)
            .fetch_all(db)
            .await
            .map_or_else(|e| e.to_string(), |r| format!("{r:?}"))
    };
    [
        ("orders", counts("SELECT status, COUNT(*) FROM orders GROUP BY status").await),
        ("tickets", counts("SELECT status, COUNT(*) FROM tickets GROUP BY status").await),
        ("tokens", counts("SELECT state, COUNT(*) FROM chain_tokens GROUP BY state").await),
        (
            "webhooks waiting",
            sqlx::query_as::<_, (String, i64, String)>(
                "SELECT event_id, CAST(attempts AS BIGINT), COALESCE(last_error, '') FROM sandbox_webhooks \
                 WHERE delivered_at IS NULL ORDER BY id LIMIT 5",
            )
            .fetch_all(db)
            .await
            .map_or_else(|e| e.to_string(), |r| format!("{r:?}")),
        ),
        (
            "outbox retries",
            errors(
                "SELECT consumer, CAST(attempts AS BIGINT), COALESCE(last_error, '') FROM outbox_queue \
                 WHERE attempts > 0 ORDER BY event_id LIMIT 5",
            )
            .await,
        ),
        (
            "collections",
            errors("SELECT state, CAST(attempts AS BIGINT), COALESCE(last_error, '') FROM chain_collections").await,
        ),
        (
            "token retries",
            errors(
                "SELECT ticket_id, CAST(attempts AS BIGINT), COALESCE(last_error, '') FROM chain_tokens \
                 WHERE attempts > 0 ORDER BY token_id LIMIT 5",
            )
            .await,
        ),
    ]
    .iter()
    .map(|(k, v)| format!("{k}: {v}"))
    .collect::<Vec<_>>()
    .join("; ")
}

/// A gift moves the token: a minted ticket is transferred by the custodian to the new
/// holder's address; a ticket gifted while its mint's outcome is unknown (chain down) is,
/// once the chain shows it was not minted, minted straight to the new holder: no transfer.
#[tokio::test]
async fn a_gift_moves_the_token_to_the_new_holder() {
    let (app, down) = spawn_app_with_outage(|_| {}, false).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let friend = app.register("friend@example.com").await;
    let gift = |ticket: String| {
        let (app, fan, friend) = (&app, &fan, &friend);
        async move {
            let g = app
                .post(
                    &format!("/api/v1/tickets/{ticket}/gifts"),
                    Some(&fan.token),
                    json!({"recipient_email": friend.email}),
                )
                .await
                .expect(201);
            let id = g["id"].as_str().unwrap();
            app.post(&format!("/api/v1/gifts/{id}/accept"), Some(&friend.token), json!({})).await.expect(200);
            app.settle().await;
        }
    };
    app.buy(&fan, &event, &tt, 1).await;
    let minted = my_tickets(&app, &fan).await[0].clone();
    let contract = addr(&minted["chain"]["contract"]);
    let chain = app.app.chain.chain().clone();
    gift(minted["id"].as_str().unwrap().to_owned()).await;
    let friend_addr = holder_address(&app, &friend).await;
    assert_eq!(chain.owner_of(contract, token(&minted)).await.unwrap(), Some(friend_addr));
    let moved = app.get(&format!("/api/v1/me/tickets/{}", minted["id"].as_str().unwrap()), Some(&friend.token)).await;
    let moved = moved.expect(200);
    assert_eq!(addr(&moved["chain"]["owner"]), friend_addr, "{moved:#}");
    assert_eq!(moved["chain"]["tx_hash"], minted["chain"]["tx_hash"], "the mint transaction stays the token's");

    // Gifted while the chain is unreachable: the waiting mint goes straight to the friend.
    down.store(true, Ordering::SeqCst);
    app.buy(&fan, &event, &tt, 1).await;
    let waiting = my_tickets(&app, &fan).await[0].clone();
    // Its mint was attempted and its outcome is unknown until the chain can be read again.
    assert_eq!(waiting["chain"]["status"], "submitted", "{waiting:#}");
    gift(waiting["id"].as_str().unwrap().to_owned()).await;
    down.store(false, Ordering::SeqCst);
    app.clock.advance(time::Duration::minutes(10));
    app.settle().await;
    assert_eq!(chain.owner_of(contract, token(&waiting)).await.unwrap(), Some(friend_addr));
    assert_eq!(chain.balance_of(contract, holder_address(&app, &fan).await).await.unwrap(), 0);
    assert_eq!(chain.total_supply(contract).await.unwrap(), 2);
    let (transfers,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM chain_transactions WHERE kind = 'transfer' AND state = 'confirmed'")
            .fetch_one(app.app.db.reader())
            .await
            .unwrap();
    assert_eq!(transfers, 1, "only the minted ticket needed a transfer");
}
