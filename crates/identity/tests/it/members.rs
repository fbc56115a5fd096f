//! Platform roles and organization members: who may change them.

use crate::helpers::*;
use entrada_identity::membership::{self, OrgRole};
use entrada_primitives::ids::{OrganizationId, UserId};
use entrada_primitives::{Email, PlatformRole};
use serde_json::json;

/// Only a platform admin may set roles: a fan gets 403 `forbidden`; an
/// admin granted from the command line (after refreshing their token) may,
/// until demoted, which takes effect at once even with the old token.
#[tokio::test]
async fn only_admins_set_platform_roles() {
    let app = spawn_app().await;
    let root = app.register("root@example.com").await;
    let bo = app.register("bo@example.com").await;
    let path = format!("/api/v1/admin/users/{}/role", bo.id);
    app.put(&path, Some(&bo.token), json!({"role": "admin"})).await.expect_problem(403, "forbidden");
    app.put(&path, None, json!({"role": "admin"})).await.expect_problem(401, "unauthenticated");

    let granted =
        app.svc.grant_platform_role(&Email::parse("root@example.com").unwrap(), PlatformRole::Admin).await.unwrap();
    assert_eq!(granted.platform_role, PlatformRole::Admin);
    // The old token still says fan.
    app.put(&path, Some(&root.token), json!({"role": "support"})).await.expect_problem(403, "forbidden");
    let fresh = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": root.refresh})).await.expect(200);
    assert_eq!(fresh["user"]["platform_role"], "admin");
    let admin_token = fresh["access_token"].as_str().unwrap().to_owned();

    let r = app.put(&path, Some(&admin_token), json!({"role": "support"})).await.expect(200);
    assert_eq!(r["platform_role"], "support");
    app.put(&path, Some(&admin_token), json!({"role": "emperor"})).await.expect_problem(422, "invalid_body");
    let nobody = format!("/api/v1/admin/users/{}/role", UserId::new());
    app.put(&nobody, Some(&admin_token), json!({"role": "fan"})).await.expect_problem(404, "not_found");
    app.put("/api/v1/admin/users/not-a-uuid/role", Some(&admin_token), json!({"role": "fan"}))
        .await
        .expect_problem(404, "not_found");
    assert!(app.audit_actions(&bo.id).await.contains(&"user.platform_role_changed".to_owned()));

    app.svc.grant_platform_role(&Email::parse("root@example.com").unwrap(), PlatformRole::Fan).await.unwrap();
    app.put(&path, Some(&admin_token), json!({"role": "admin"})).await.expect_problem(403, "forbidden");
    let unknown = app.svc.grant_platform_role(&Email::parse("ghost@example.com").unwrap(), PlatformRole::Admin).await;
    assert!(matches!(unknown, Err(entrada_identity::IdentityError::NotFound)));
}

/// An owner adds members; any member lists them; a non-owner member's POST,
/// an outsider's GET and an unknown organization all answer 404
/// `not_found`; the membership shows in `/api/v1/me`.
#[tokio::test]
async fn owners_manage_members_and_members_see_them() {
    let app = spawn_app().await;
    let owner = app.register("owner@example.com").await;
    let viewer = app.register("viewer@example.com").await;
    let outsider = app.register("outsider@example.com").await;
    let org = OrganizationId::new();
    let mut tx = app.tdb.db.begin().await.unwrap();
    membership::set(&mut tx, org, owner.id.parse().unwrap(), OrgRole::Owner, 0).await.unwrap();
    tx.commit().await.unwrap();
    let path = format!("/api/v1/organizations/{org}/members");

    let m =
        app.post(&path, Some(&owner.token), json!({"email": "viewer@example.com", "role": "viewer"})).await.expect(201);
    assert_eq!(m["user_id"], viewer.id);
    assert_eq!(m["role"], "viewer");
    assert_eq!(m["since"], "2030-01-01T00:00:00Z");

    let list = app.get(&path, Some(&viewer.token)).await.expect(200);
    let emails: Vec<_> = list["items"].as_array().unwrap().iter().map(|m| m["email"].clone()).collect();
    assert_eq!(emails, [json!("owner@example.com"), json!("viewer@example.com")]);

    app.post(&path, Some(&viewer.token), json!({"email": "outsider@example.com", "role": "owner"}))
        .await
        .expect_problem(404, "not_found");
    app.get(&path, Some(&outsider.token)).await.expect_problem(404, "not_found");
    let elsewhere = format!("/api/v1/organizations/{}/members", OrganizationId::new());
    app.get(&elsewhere, Some(&owner.token)).await.expect_problem(404, "not_found");
    app.post(&elsewhere, Some(&owner.token), json!({"email": "viewer@example.com", "role": "viewer"}))
        .await
        .expect_problem(404, "not_found");

    let unknown = app.post(&path, Some(&owner.token), json!({"email": "ghost@example.com", "role": "viewer"})).await;
    unknown.expect_problem(422, "validation_failed");
    assert_eq!(unknown.body["errors"][0]["field"], "email");

    let me = app.get("/api/v1/me", Some(&viewer.token)).await.expect(200);
    assert_eq!(me["organizations"], json!([{"organization_id": org.to_string(), "role": "viewer"}]));
    assert_eq!(app.audit_actions(&org.to_string()).await, ["organization.member_set"]);
}

/// The last owner cannot demote themselves (409 `last_owner`); with a second
/// owner they can. A repeated POST with the same Idempotency-Key replays.
#[tokio::test]
async fn an_organization_keeps_an_owner() {
    let app = spawn_app().await;
    let owner = app.register("owner@example.com").await;
    app.register("second@example.com").await;
    let org = OrganizationId::new();
    let mut tx = app.tdb.db.begin().await.unwrap();
    membership::set(&mut tx, org, owner.id.parse().unwrap(), OrgRole::Owner, 0).await.unwrap();
    tx.commit().await.unwrap();
    let path = format!("/api/v1/organizations/{org}/members");

    app.post(&path, Some(&owner.token), json!({"email": "owner@example.com", "role": "manager"}))
        .await
        .expect_problem(409, "last_owner");
    let add = || {
        app.send(
            app.http
                .post(app.url(&path))
                .bearer_auth(&owner.token)
                .header("idempotency-key", "add-second")
                .json(&json!({"email": "second@example.com", "role": "owner"})),
        )
    };
    let first = add().await.expect(201);
    let again = add().await.expect(201);
    assert_eq!(first, again);
    app.post(&path, Some(&owner.token), json!({"email": "owner@example.com", "role": "manager"})).await.expect(201);
    let owner_id: UserId = owner.id.parse().unwrap();
    assert_eq!(membership::role_of(&app.tdb.db, owner_id, org).await.unwrap(), Some(OrgRole::Manager));
}
