//! Tokens and transport rules.

use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;
use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, Engine};

async fn post(app: &crate::helpers::TestApp, auth: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = app.client.post(format!("{}/graphql", app.url)).json(&body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn missing_expired_forged_and_malformed_tokens_are_unauthenticated() {
    let app = spawn_app(Engine::Sqlite).await;
    let q = json!({ "query": "{ me { id } }" });
    let (status, body) = post(&app, None, q.clone()).await;
    assert_eq!((status, code(&body)), (200, Some("UNAUTHENTICATED")));

    let expired = app
        .keys
        .mint(Role::Admin, None, chrono::Duration::seconds(-5))
        .unwrap();
    let forged = TokenKeys::new(&JwtSecret::new(vec![9u8; 32]).unwrap())
        .mint(Role::Admin, None, chrono::Duration::hours(1))
        .unwrap();
    for header in [
        format!("Bearer {expired}"),
        format!("Bearer {forged}"),
        "Bearer not-a-token".to_owned(),
        format!("Basic {}", app.admin),
    ] {
        let (status, body) = post(&app, Some(&header), q.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (401, Some("UNAUTHENTICATED")),
            "{header}"
        );
        assert!(body["data"].is_null());
    }
    let (status, body) = post(
        &app,
        Some(&format!("Bearer {}", app.admin)),
        json!({ "query": "{ falAccounts { id } }" }),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({ "data": { "falAccounts": [] } }))
    );
}

#[tokio::test]
async fn mutations_over_get_are_refused_and_queries_work() {
    let app = spawn_app(Engine::Sqlite).await;
    let resp = app
        .client
        .get(format!("{}/graphql", app.url))
        .query(&[("query", "mutation { expirePoints { batchesExpired } }")])
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = app
        .client
        .get(format!("{}/graphql", app.url))
        .query(&[("query", "{ falAccounts { id } }")])
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // A browser gets GraphiQL.
    let page = app
        .client
        .get(format!("{}/graphql", app.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("graphiql"), "GraphiQL page");
    for path in ["/healthz", "/readyz"] {
        let s = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s.as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn introspection_is_for_admins_and_deep_queries_are_limited() {
    let app = spawn_app(Engine::Sqlite).await;
    let q = json!({ "query": "{ __schema { queryType { name } } }" });
    let (_, body) = post(&app, Some(&format!("Bearer {}", app.admin)), q.clone()).await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "QueryRoot");
    let (_, body) = post(&app, Some(&format!("Bearer {}", app.service)), q).await;
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");
    assert!(body["data"].is_null(), "{body}");

    let mut deep = "name".to_owned();
    for _ in 0..30 {
        deep = format!("ofType {{ {deep} }}");
    }
    let q = format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}");
    let (_, body) = post(
        &app,
        Some(&format!("Bearer {}", app.admin)),
        json!({ "query": q }),
    )
    .await;
    assert_eq!(code(&body), Some("LIMIT_EXCEEDED"), "{body}");
}

/// graphql-js `getIntrospectionQuery()`: what GraphiQL, Apollo, GraphQL
/// Code Generator and Postman send (15 levels deep).
fn standard_introspection_query() -> String {
    let mut type_ref = "kind name".to_owned();
    for _ in 0..9 {
        type_ref = format!("kind name ofType {{ {type_ref} }}");
    }
    format!(
        "query IntrospectionQuery {{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }} \
           types {{ ...FullType }} directives {{ name description isRepeatable locations args {{ ...InputValue }} }} }} }} \
         fragment FullType on __Type {{ kind name description specifiedByURL \
           fields(includeDeprecated: true) {{ name description args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }} \
           inputFields {{ ...InputValue }} interfaces {{ ...TypeRef }} \
           enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} \
           possibleTypes {{ ...TypeRef }} }} \
         fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }} \
         fragment TypeRef on __Type {{ {type_ref} }}"
    )
}

#[tokio::test]
async fn the_standard_introspection_query_answers_admins_and_refuses_others() {
    let app = spawn_app(Engine::Sqlite).await;
    let q =
        json!({ "query": standard_introspection_query(), "operationName": "IntrospectionQuery" });
    let (status, body) = post(&app, Some(&format!("Bearer {}", app.admin)), q.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "UsageDetail"), "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "QueryRoot");
    for token in [app.service.clone(), app.user_token(1)] {
        let (_, body) = post(&app, Some(&format!("Bearer {token}")), q.clone()).await;
        assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");
    }
    let (_, body) = post(&app, None, q).await;
    assert_eq!(code(&body), Some("FORBIDDEN"), "{body}");
    // `__typename` is no introspection: free for everyone.
    let (_, body) = post(
        &app,
        Some(&format!("Bearer {}", app.service)),
        json!({ "query": "{ __typename }" }),
    )
    .await;
    assert_eq!(body["data"]["__typename"], "QueryRoot", "{body}");
}

#[tokio::test]
async fn websocket_clients_authenticate_in_connection_init() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let app = spawn_app(Engine::Sqlite).await;
    let u = app.create_user("ws").await;
    app.recharge(u, 42, "ws-o", None).await;
    let connect = |token: String| {
        let url = app.url.replace("http://", "ws://") + "/graphql";
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut().insert(
                "sec-websocket-protocol",
                "graphql-transport-ws".parse().unwrap(),
            );
            let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
            assert_eq!(
                resp.headers()["sec-websocket-protocol"],
                "graphql-transport-ws"
            );
            ws.send(Message::text(
                json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })
                    .to_string(),
            ))
            .await
            .unwrap();
            ws
        }
    };
    let next_json = |m: Message| -> Value { serde_json::from_str(m.to_text().unwrap()).unwrap() };

    let mut ws = connect(app.user_token(u)).await;
    assert_eq!(
        next_json(ws.next().await.unwrap().unwrap())["type"],
        "connection_ack"
    );
    ws.send(Message::text(
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ me { id balance } }" } })
            .to_string(),
    ))
    .await
    .unwrap();
    let msg = next_json(ws.next().await.unwrap().unwrap());
    assert_eq!(msg["type"], "next");
    assert_eq!(
        msg["payload"]["data"]["me"],
        json!({ "id": u, "balance": 42 })
    );
    assert_eq!(
        next_json(ws.next().await.unwrap().unwrap())["type"],
        "complete"
    );

    // Apollo-style connection params: the token under `headers`.
    let mut req = (app.url.replace("http://", "ws://") + "/graphql")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut apollo, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    apollo
        .send(Message::text(
            json!({ "type": "connection_init", "payload": { "headers": { "Authorization": format!("Bearer {}", app.user_token(u)) } } })
                .to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(apollo.next().await.unwrap().unwrap())["type"],
        "connection_ack"
    );

    // A forged token: the server closes with graphql-transport-ws's 4403
    // instead of acknowledging.
    let forged = TokenKeys::new(&JwtSecret::new(vec![9u8; 32]).unwrap())
        .mint(Role::Admin, None, chrono::Duration::hours(1))
        .unwrap();
    let mut ws = connect(forged).await;
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4403);
            assert!(frame.reason.contains("invalid"), "{}", frame.reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}
