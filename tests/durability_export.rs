//! Export and import through the `roster` CLI move a whole registry, all
//! or nothing, between two real roster processes.

mod common;

use common::{
    get_ok, http_client,
    load::*,
    process::{Site, cli},
};
use serde_json::json;

#[tokio::test]
async fn export_and_import_move_a_registry_all_or_nothing() {
    let client = http_client();
    let (site_a, site_b) = (Site::new(), Site::new());
    let a = site_a.start().await;
    populate(&client, &a).await;
    let b = site_b.start().await;

    let exported = cli(&["export", "--http", &a.http.to_string()], None);
    assert!(
        exported.status.success(),
        "export: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let file = site_b.root.path().join("export.json");
    std::fs::write(&file, &exported.stdout).expect("write export");
    let imported = cli(&["import", "--http", &b.http.to_string()], Some(&file));
    assert!(
        imported.status.success(),
        "import: {}",
        String::from_utf8_lossy(&imported.stderr)
    );

    // Imported checks start critical, as after a restart; web-2's service
    // reports to the new server.
    heartbeat_passing(&client, &b, "web", "web-2").await;
    let services = ["web", "api"];
    let (from, to) = (
        list_instances(&client, &a, &services).await,
        list_instances(&client, &b, &services).await,
    );
    assert_eq!(from.len(), 5);
    assert_eq!(
        from.values().map(durable_view).collect::<Vec<_>>(),
        to.values().map(durable_view).collect::<Vec<_>>()
    );
    assert_eq!(
        get_ok(&client, &a.url("/v1/services")).await,
        get_ok(&client, &b.url("/v1/services")).await
    );
    assert_eq!(dns_answers(a.dns).await, dns_answers(b.dns).await);

    // Invalid imports fail and change nothing.
    let export_b = get_ok(&client, &b.url("/v1/export")).await;
    let valid = |id: &str| {
        json!({"service": "web", "id": id, "address": "10.9.9.9", "port": 1,
               "weight": 1, "priority": 0})
    };
    let mut bad_address = valid("bad");
    bad_address["address"] = json!("10.0.0.300");
    let mut bad_meta = valid("bad");
    bad_meta["meta"] = json!({"not a key": "x"});
    let mut bad_service = valid("bad");
    bad_service["service"] = json!("---");
    let bad_files = [
        ("bad json", "{\"version\": 1, \"instances\": [".to_owned()),
        (
            "bad address",
            json!({"version": 1, "index": 1, "instances": [valid("new-1"), bad_address]})
                .to_string(),
        ),
        (
            "bad meta after good ones",
            json!({"version": 1, "index": 1, "instances": [valid("new-1"), valid("new-2"), bad_meta]})
                .to_string(),
        ),
        (
            "bad service name",
            json!({"version": 1, "index": 1, "instances": [valid("new-1"), bad_service]})
                .to_string(),
        ),
    ];
    for (what, text) in bad_files {
        let file = site_b.root.path().join("bad.json");
        std::fs::write(&file, text).expect("write bad file");
        let output = cli(&["import", "--http", &b.http.to_string()], Some(&file));
        assert!(!output.status.success(), "{what}: the import succeeded");
        assert_eq!(
            get_ok(&client, &b.url("/v1/export")).await,
            export_b,
            "{what}: the failed import changed the registry"
        );
    }
}
