//! Black-box tests: the real `crm` binary on a free port, on SQLite and on
//! PostgreSQL, driven over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventstore::testing::TestDatabase;
use futures_util::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = super::Server::start(eventstore::testing::TestDatabase::sqlite()).await;
                    super::$case(&server).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(database) = eventstore::testing::TestDatabase::postgres().await else { return };
                    let server = super::Server::start(database).await;
                    super::$case(&server).await;
                }
            )*
        }
    };
}

on_both_backends!(
    records_can_be_created_read_listed_changed_and_archived,
    search_finds_records_by_any_piece_of_name_email_phone_or_domain_before_and_after_a_rebuild,
    every_error_status_of_the_contract_is_a_problem_and_appends_nothing,
    each_role_reaches_exactly_its_routes,
    an_idempotent_retry_returns_the_first_response_and_appends_nothing,
    of_sixteen_concurrent_patches_with_one_version_exactly_one_wins,
    concurrent_patches_without_a_version_lose_no_update_and_answer_what_they_wrote,
    two_servers_on_one_database_see_each_others_writes_at_once,
    two_servers_writing_one_record_in_turn_lose_nothing,
    an_append_on_one_server_reaches_another_s_event_stream_at_once,
    a_client_reads_its_own_writes_on_any_server_by_the_position_they_reached,
    one_rebuild_runs_at_a_time_per_database,
    readiness_turns_away_traffic_while_commits_fail_and_comes_back,
    metrics_count_requests_by_route_commits_and_read_model_lag,
    history_timeline_audit_and_reports_tell_who_changed_what,
    report_lists_page_by_cursor_narrow_by_filter_and_refuse_what_they_cannot_answer,
    the_event_stream_delivers_a_new_event,
    import_export_import_round_trips_and_a_reimport_changes_nothing,
    a_write_that_makes_a_likely_duplicate_goes_through_and_names_it,
    external_ids_stay_unique_among_live_records_across_servers_imports_and_an_upgrade,
    the_openapi_document_lists_every_route,
    a_trend_gives_each_dates_figures_as_its_report_as_of_then_does,
    as_recorded_shows_what_the_system_held_then_and_as_of_what_had_happened,
    sigterm_lets_in_flight_requests_finish_and_loses_nothing_acknowledged,
    sigkill_mid_write_loses_no_acknowledged_write_from_log_or_read_models,
    an_erased_contact_leaves_no_trace_of_its_personal_data_anywhere_and_the_log_verifies,
    an_erased_user_leaves_no_trace_acts_no_more_and_their_work_still_counts,
);

/// Slow or stalled clients (half a request's headers, then nothing) are cut
/// off after the header timeout, and while they hold every connection slot a
/// new client is answered at once (503, Retry-After) instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_cut_off_and_never_lock_out_a_new_client() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = Server::start_with_args(
        TestDatabase::sqlite(),
        None,
        &["--connections-max", "8", "--header-timeout-secs", "1"],
    )
    .await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connects");
        stream
            .write_all(b"GET /v1/contacts HTTP/1.1\r\nHost: crm\r\n")
            .await
            .expect("half a request");
        stalled.push(stream);
    }
    let started = std::time::Instant::now();
    let response = server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("a new client is answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "every slot is held");
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once: {:?}",
        started.elapsed()
    );
    let problem: Value = response.json().await.expect("a problem");
    assert_eq!(problem["status"], 503);
    // Each stalled connection is closed by the server within the timeout.
    for stream in &mut stalled {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "a stalled connection is cut off");
    }
    let (status, _, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "the slots are free again");
}

/// An import refuses a header it cannot read (400, with its columns) and
/// stops at its caps (413, with what it imported before); a mapping given
/// as a parameter reads another system's columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_refuse_headers_they_cannot_read_and_stop_at_their_caps() {
    let server = Server::start_with_args(
        TestDatabase::sqlite(),
        None,
        &["--import-rows-max", "3", "--import-bytes-max", "4000"],
    )
    .await;
    let post = |query: &str, body: reqwest::Body| {
        server
            .client
            .post(format!("{}/v1/import/contacts{query}", server.base))
            .bearer_auth(&server.admin)
            .body(body)
            .send()
    };
    let before = server.n_events().await;
    for (body, understood, not_understood) in [
        (
            "Full Name,E-mail\nAda,ada@example.com\n",
            json!([]),
            json!(["Full Name", "E-mail"]),
        ),
        ("name,E-mail\nAda,ada@example.com\n", json!(["name"]), json!(["E-mail"])),
        ("{\"name\": \"Ada\"}", json!([]), json!(["{\"name\": \"Ada\"}"])),
    ] {
        let response = post("", body.into()).await.expect("answer");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.expect("a problem");
        assert_eq!(
            problem["type"], "https://crm.invalid/problems/unreadable-import",
            "{problem}"
        );
        assert_eq!(
            (&problem["understood_columns"], &problem["not_understood_columns"]),
            (&understood, &not_understood),
            "{problem}"
        );
    }
    assert_eq!(server.n_events().await, before, "a refused header imports nothing");
    let mapped = post(
        "?map=Full%20Name%3Dname%2CE-mail%3Demail%2CNotes%3D",
        "Full Name,E-mail,Notes\nAda Lovelace,ada@example.com,x\n".into(),
    )
    .await
    .expect("answer");
    assert_eq!(mapped.status(), StatusCode::OK);
    let report: Value = mapped.json().await.expect("a report");
    assert_eq!(
        (&report["created"], &report["ignored_columns"]),
        (&json!(1), &json!(["Notes"])),
        "{report}"
    );
    // Progress as it goes, one JSON line a second, then the report; a
    // refused header is still its status.
    let streamed = |body: &'static str| {
        server
            .client
            .post(format!("{}/v1/import/contacts", server.base))
            .bearer_auth(&server.admin)
            .header("accept", "application/x-ndjson")
            .body(body)
            .send()
    };
    let response = streamed("external_id,name\nS-1,Streamed One\nS-2,\n")
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.expect("lines");
    let last: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("JSON");
    assert_eq!(
        (
            &last["report"]["created"],
            &last["report"]["failed"],
            &last["report"]["errors"][0]["line"]
        ),
        (&json!(1), &json!(1), &json!(3)),
        "{text}"
    );
    let response = streamed("Full Name\nAda\n").await.expect("answer");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bad_map = post("?map=no%20equals%20sign", "name\nAda\n".into())
        .await
        .expect("answer");
    assert_eq!(bad_map.status(), StatusCode::BAD_REQUEST);
    // Four rows against a cap of three: the first three stay imported.
    let rows: String = (0..4).fold("external_id,name\n".to_owned(), |csv, n| {
        csv + &format!("R-{n},Row {n}\n")
    });
    let response = post("", rows.into()).await.expect("answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = response.json().await.expect("a problem");
    assert_eq!(
        (&problem["rows_max"], &problem["imported"]["created"]),
        (&json!(3), &json!(3)),
        "{problem}"
    );
    // Past the byte cap: refused whole when the length says so, and cut
    // off where it is crossed when the body streams without one.
    let big = format!("name,title\nAda,{}\n", "x".repeat(5_000));
    let response = post("", big.clone().into()).await.expect("answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = response.json().await.expect("a problem");
    assert_eq!(problem["imported"]["rows"], 0, "{problem}");
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(500)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = post("", reqwest::Body::wrap_stream(chunks)).await.expect("answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = response.json().await.expect("a problem");
    assert_eq!(
        (&problem["bytes_max"], &problem["imported"]["rows"]),
        (&json!(4000), &json!(0)),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("4000 bytes")),
        "{problem}"
    );
    let (status, _) = server.admin(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "the server serves on");
}

/// An export walks the records a page at a time (1,000): one of several
/// pages has every live record once, in the columns an import takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_several_pages_has_every_live_record_once() {
    const ROWS: usize = 2_345;
    let server = Server::start(TestDatabase::sqlite()).await;
    let mut csv = String::from("external_id,name,email\n");
    for n in 0..ROWS {
        csv.push_str(&format!("E-{n},Paged {n},p{n}@example.com\n"));
    }
    let imported = server.import_csv("contacts", csv).await;
    assert_eq!(imported["created"], ROWS, "{imported}");
    let archived = all_contacts(&server)
        .await
        .into_iter()
        .find(|c| c["external_id"] == "E-7")
        .expect("E-7");
    let (status, _) = server
        .admin(Method::DELETE, &format!("/v1/contacts/{}", id(&archived)), None)
        .await;
    assert!(status.is_success());
    let exported = server.export_csv("contacts").await;
    let mut lines = exported.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let column = header
        .iter()
        .position(|c| *c == "external_id")
        .expect("an external_id column");
    let rows: Vec<String> = lines
        .map(|l| l.split(',').nth(column).unwrap_or("").to_owned())
        .collect();
    let ids: std::collections::BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(
        (rows.len(), ids.len()),
        (ROWS - 1, ROWS - 1),
        "every live record once (E-7 is archived)"
    );
    assert!(!ids.contains("E-7") && ids.contains("E-0") && ids.contains(&format!("E-{}", ROWS - 1)));
}

/// The disk fills under a running SQLite server (its database on a 4 MiB
/// tmpfs, mounted in a private mount namespace, so no privilege is needed):
/// writes answer 503 with `Retry-After` and `/readyz` says why; once space
/// is freed the same process writes again, and every acknowledged create
/// is there, the chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_writes_resume_once_space_is_freed() {
    let dir = std::env::temp_dir().join(format!("crm-full-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let mut command = Command::new("unshare");
    command
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=4m tmpfs "$0" && exec "$1" serve --addr 127.0.0.1:0 --database "sqlite://$0/crm.db""#)
        .arg(&dir)
        .arg(env!("CARGO_BIN_EXE_crm-blackbox"))
        .env("CRM_LOG", "error");
    let server = Server::from_command(command, None, None).await;
    // The server's own view of the directory: the tmpfs.
    let inside = std::path::PathBuf::from(format!("/proc/{}/root{}", server.child.id(), dir.display()));
    let filler = inside.join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).expect("a filler file on the tmpfs");
        let block = vec![7u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // Leave room for a few hundred creates, so some land before it fills.
        let full = file.metadata().expect("its size").len();
        file.set_len(full.saturating_sub(512 * 1024)).expect("room");
    }
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 0..3_000 {
        let body = json!({"name": format!("Filler {n}"), "title": "x".repeat(1_000)});
        let (status, headers, answer) = server
            .call(Method::POST, "/v1/contacts", Some(&server.admin), Some(body))
            .await;
        match status {
            StatusCode::CREATED => acknowledged.push(id(&answer)),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(headers.contains_key("retry-after"), "{answer}");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("a full disk answers 503, not {other}: {answer}"),
        }
    }
    assert_eq!(refused, 5, "the disk filled up");
    assert!(!acknowledged.is_empty(), "writes landed before the disk filled");
    let (status, _, readiness) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{readiness}");
    assert!(
        readiness.to_string().contains("full"),
        "readiness names the cause: {readiness}"
    );

    std::fs::remove_file(&filler).expect("free the space");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, answer) = server
            .call(
                Method::POST,
                "/v1/contacts",
                Some(&server.admin),
                Some(json!({"name": "After the disk"})),
            )
            .await;
        if status == StatusCode::CREATED {
            acknowledged.push(id(&answer));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes resume with no restart: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed: std::collections::BTreeSet<String> = all_contacts(&server).await.iter().map(id).collect();
    for written in &acknowledged {
        assert!(listed.contains(written), "acknowledged {written} is kept");
    }
    assert_eq!(listed.len(), acknowledged.len(), "nothing refused was written");
    let (_, verified) = server.admin(Method::GET, "/v1/admin/verify", None).await;
    assert_eq!(verified["ok"], true, "{verified}");
}

/// A client that sends a large import whole and hangs up: the server stops
/// importing once the connection's end reaches it, instead of working
/// through the rest of the body for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stops_when_its_client_hangs_up() {
    use tokio::io::AsyncWriteExt as _;
    const ROWS: u64 = 20_000;
    let server = Server::start(TestDatabase::sqlite()).await;
    let before = server.n_events().await;
    let mut csv = String::from("external_id,name\n");
    for n in 0..ROWS {
        csv.push_str(&format!("H-{n},Hung {n}\n"));
    }
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connects");
    let head = format!(
        "POST /v1/import/contacts HTTP/1.1\r\nHost: crm\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
        server.admin,
        csv.len()
    );
    stream.write_all(head.as_bytes()).await.expect("headers");
    stream.write_all(csv.as_bytes()).await.expect("the whole body");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.n_events().await < before + 200 {
        assert!(std::time::Instant::now() < deadline, "the import started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);
    // The rows already sent reach the server before the hang-up does; the
    // count then stops.
    let mut last = server.n_events().await;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = server.n_events().await;
        if now == last {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the import stopped");
        last = now;
    }
    assert!(
        last - before < ROWS,
        "the import stopped after {} of {ROWS} rows",
        last - before
    );
    let (status, _, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Hostile input, generated: random methods, paths built from the routes'
/// shapes with random segments, unknown and malformed query parameters,
/// random headers and bodies (JSON of any shape, bytes that are not UTF-8).
/// Whatever comes, the server answers: never a 5xx, every refusal is
/// problem+json with its own status, and a refused request appends nothing.
/// `PROPTEST_CASES` sets how many (400 by default: a few seconds).
#[test]
fn any_request_gets_a_clean_answer_and_a_refusal_appends_nothing() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let server = runtime.block_on(Server::start(TestDatabase::sqlite()));
    let (account, contact, deal) = runtime.block_on(async {
        let account = server
            .create("accounts", json!({"name": "Acme", "external_id": "A-1"}))
            .await;
        let contact = server
            .create(
                "contacts",
                json!({"name": "Ada", "account_id": id(&account), "external_id": "C-1"}),
            )
            .await;
        let deal = server
            .create("deals", json!({"title": "Pilot", "account_id": id(&account)}))
            .await;
        (id(&account), id(&contact), id(&deal))
    });

    let odd_segment = prop_oneof![
        Just("0190a000-0000-7000-8000-000000000009".to_owned()),
        Just("%00".to_owned()),
        Just("..".to_owned()),
        Just("%FF%FE".to_owned()),
        "[a-z0-9_.~-]{0,12}",
        "[A-Za-z0-9%]{200,400}",
    ];
    let kind = prop_oneof![
        4 => Just("contacts".to_owned()),
        3 => Just("accounts".to_owned()),
        3 => Just("deals".to_owned()),
        2 => Just("interactions".to_owned()),
        1 => Just("users".to_owned()),
        1 => Just("pipeline".to_owned()),
        1 => Just("data-quality".to_owned()),
        1 => Just("stale".to_owned()),
        2 => odd_segment.clone(),
    ];
    let record = prop_oneof![
        3 => Just(contact.clone()),
        2 => Just(account.clone()),
        3 => Just(deal.clone()),
        2 => odd_segment,
    ];
    let path = prop_oneof![
        Just("/v1/{0}".to_owned()),
        Just("/v1/{0}".to_owned()),
        Just("/v1/{0}".to_owned()),
        Just("/v1/{0}".to_owned()),
        Just("/v1/{0}/{1}".to_owned()),
        Just("/v1/{0}/{1}".to_owned()),
        Just("/v1/{0}/{1}".to_owned()),
        Just("/v1/{0}/{1}/history".to_owned()),
        Just("/v1/{0}/{1}/timeline".to_owned()),
        Just("/v1/deals/{1}/stage".to_owned()),
        Just("/v1/deals/{1}/stage".to_owned()),
        Just("/v1/deals/{1}/close".to_owned()),
        Just("/v1/reports/{0}".to_owned()),
        Just("/v1/reports/data-quality/{0}".to_owned()),
        Just("/v1/events".to_owned()),
        Just("/v1/audit".to_owned()),
        Just("/v1/import/{0}".to_owned()),
        Just("/v1/export/{0}.csv".to_owned()),
        Just("/v1/admin/{0}".to_owned()),
        Just("/{0}".to_owned()),
    ];
    let parameter = (
        prop_oneof![
            Just("limit"),
            Just("cursor"),
            Just("as_of"),
            Just("q"),
            Just("owner_id"),
            Just("account_id"),
            Just("after"),
            Just("since"),
            Just("until"),
            Just("stage"),
            Just("kind"),
            Just("department"),
            Just("actor"),
            Just("list"),
            Just("bogus"),
        ],
        prop_oneof![
            Just("-1".to_owned()),
            Just("0".to_owned()),
            Just("500".to_owned()),
            Just("99999999999999999999".to_owned()),
            Just("2026-09-30".to_owned()),
            Just("2026-13-45".to_owned()),
            Just("abc".to_owned()),
            Just("%27%20OR%201%3D1--".to_owned()),
            Just(contact.clone()),
            "[ -~]{0,20}".prop_map(|v| v.replace(['&', '#', ' '], "")),
        ],
    );
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,30}".prop_map(Value::String),
        Just(json!(contact.clone())),
        Just(json!(i64::MAX)),
    ];
    let json_value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("title".to_owned()),
                    Just("email".to_owned()),
                    Just("account_id".to_owned()),
                    Just("contact_id".to_owned()),
                    Just("stage".to_owned()),
                    Just("outcome".to_owned()),
                    Just("amount".to_owned()),
                    Just("value_minor".to_owned()),
                    Just("currency".to_owned()),
                    Just("kind".to_owned()),
                    Just("summary".to_owned()),
                    Just("tags".to_owned()),
                    Just("custom".to_owned()),
                    Just("external_id".to_owned()),
                    Just("role".to_owned()),
                    Just("department".to_owned()),
                    ".{0,10}",
                ],
                inner,
                0..6,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    // Mostly well-formed records of some kind, with one field set to anything.
    let bases = vec![
        json!({"name": "Fuzz", "account_id": account.clone(), "external_id": "C-F"}),
        json!({"name": "Fuzz Ltd", "domain": "fuzz.example"}),
        json!({"title": "Fuzz deal", "account_id": account.clone(), "stage": "proposal"}),
        json!({"kind": "call", "summary": "called", "contact_id": contact.clone()}),
        json!({"stage": "negotiation"}),
        json!({"outcome": "lost", "reason": "price"}),
        json!({"name": "Fuzzer", "department": "Sales", "role": "viewer"}),
    ];
    let field = prop_oneof![
        Just("name"),
        Just("email"),
        Just("phone"),
        Just("amount"),
        Just("tags"),
        Just("custom"),
        Just("external_id"),
        Just("stage"),
        Just("expected_close"),
        Just("occurred_at"),
        Just("owner_id"),
        Just("lifecycle_stage"),
        Just("domain"),
        Just("contact_ids"),
        Just("title"),
        Just("unknown"),
    ];
    let record_body = (
        prop::sample::select(bases),
        prop::option::of((field, json_value.clone())),
    )
        .prop_map(|(mut body, change)| {
            if let Some((field, value)) = change {
                body[field] = value;
            }
            Some(body.to_string().into_bytes())
        });
    let body = prop_oneof![
        2 => Just(None),
        4 => record_body,
        4 => json_value.prop_map(|v| Some(v.to_string().into_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Some),
        1 => Just(Some(b"external_id,name\nZ-1,Zed\n,\n\"unterminated".to_vec())),
    ];
    let header = prop_oneof![
        Just(None),
        Just(Some(("If-Match", "\"1\"".to_owned()))),
        Just(Some(("If-Match", "garbage".to_owned()))),
        Just(Some(("Idempotency-Key", "k".repeat(300)))),
        Just(Some(("Crm-Min-Position", "18446744073709551616".to_owned()))),
        Just(Some(("Content-Type", "text/plain".to_owned()))),
    ];
    let method = prop_oneof![
        4 => Just(Method::GET), 4 => Just(Method::POST), 3 => Just(Method::PATCH), 1 => Just(Method::DELETE), 1 => Just(Method::PUT),
    ];
    let request = (
        method,
        path,
        kind,
        record,
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(parameter, 1..4)],
        body,
        header,
    );
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let head = || async {
        let (_, verified) = server.admin(Method::GET, "/v1/admin/verify", None).await;
        verified["events"].as_u64().expect("a count")
    };
    let outcome = runner.run(&request, |(method, path, first, second, parameters, body, header)| {
        runtime.block_on(async {
            let path = path.replace("{0}", &first).replace("{1}", &second);
            let query: Vec<String> = parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let url = format!("{}{path}?{}", server.base, query.join("&"));
            let before = head().await;
            let mut request = server.client.request(method.clone(), &url).bearer_auth(&server.admin);
            if let Some(body) = body {
                request = request.header("Content-Type", "application/json").body(body);
            }
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            let Ok(response) = request.send().await else {
                // reqwest itself refused to build it (a URL it cannot parse).
                return Ok(());
            };
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let text = response.text().await.unwrap_or_default();
            let what = format!("{method} {url} -> {status}: {text:.300}");
            prop_assert!(!status.is_server_error(), "{}", what);
            if status.is_client_error() {
                prop_assert_eq!(content_type.as_str(), "application/problem+json", "{}", what);
                let problem: Value =
                    serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {what}")))?;
                prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status.as_u16())), "{}", what);
                prop_assert_eq!(head().await, before, "a refused request appended nothing: {}", what);
            }
            Ok(())
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// A TCP proxy in front of PostgreSQL that a test can cut, as a stopped
/// database server looks (every open connection is dropped, new ones are
/// closed at once), or make hang, as an unreachable one looks (new
/// connections are taken and never answered), until it is restored.
struct CuttableProxy {
    port: u16,
    /// 0: forwarding, 1: closing, 2: hanging.
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn to(upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (accepting, cut_signal) = (mode.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cut_signal.subscribe();
                match accepting.load(Ordering::SeqCst) {
                    1 => continue, // dropped: closed at once
                    2 => {
                        // Held, unanswered, until the proxy is restored.
                        tokio::spawn(async move {
                            let _ = cut.changed().await;
                            drop(client);
                        });
                        continue;
                    }
                    _ => {}
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, mode, cuts, task }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn cut(&self) {
        self.set(1);
    }

    fn hang(&self) {
        self.set(2);
    }

    fn restore(&self) {
        self.set(0);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// PostgreSQL stops under a running server, and another starts while it is
/// down: both answer 503 with Retry-After within the configured wait (never
/// a hang), `/healthz` stays 200, and once the database is back both serve
/// again with no restart, nothing refused having been written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_requests_get_a_prompt_503_and_service_resumes_after() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let url = reqwest::Url::parse(&database.url).expect("a URL");
    let upstream = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let proxy = CuttableProxy::to(upstream).await;
    let mut proxied = database.shared();
    let mut through = url.clone();
    through.set_port(Some(proxy.port)).expect("a port");
    proxied.url = through.to_string();
    let args = ["--database-wait-secs", "2"];
    let server = Server::start_with_args(proxied.shared(), None, &args).await;
    let before = server.create("contacts", json!({"name": "Before"})).await;

    proxy.cut();
    for (method, path, body) in [
        (Method::POST, "/v1/contacts", Some(json!({"name": "During"}))),
        (Method::GET, "/v1/contacts", None),
        (Method::GET, &*format!("/v1/contacts/{}", id(&before)), None),
    ] {
        let started = std::time::Instant::now();
        let (status, headers, problem) = server.call(method.clone(), path, Some(&server.admin), body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {problem}");
        assert!(headers.contains_key("retry-after"), "{method} {path}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{method} {path} answered within the wait: {:?}",
            started.elapsed()
        );
    }
    let (status, _, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "the process lives");
    let (status, _, _) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Started during the outage: up at once, 503 until the database is back.
    let late = Server::start_with_args(proxied.shared(), Some(server.admin.clone()), &args).await;
    let (status, _, _) = late.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = late.call(Method::GET, "/v1/contacts", Some(&late.admin), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));

    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for at in [&server, &late] {
        loop {
            let (status, _, _) = at
                .call(
                    Method::POST,
                    "/v1/contacts",
                    Some(&at.admin),
                    Some(json!({"name": "After"})),
                )
                .await;
            if status == StatusCode::CREATED {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "service resumes: {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let names: Vec<Value> = all_contacts(&late).await.iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names.len(), 3, "nothing refused was written: {names:?}");
    assert!(
        names.contains(&json!("Before")) && !names.contains(&json!("During")),
        "{names:?}"
    );
    let (_, verified) = late.admin(Method::GET, "/v1/admin/verify", None).await;
    assert_eq!(verified["ok"], true);

    // Unreachable rather than stopped: connections hang unanswered. Still a
    // 503 within the wait (2 s here), not a hang of the request's life.
    proxy.hang();
    for (method, path, body) in [
        (Method::POST, "/v1/contacts", Some(json!({"name": "Hung"}))),
        (Method::GET, "/v1/contacts", None),
    ] {
        let started = std::time::Instant::now();
        let (status, headers, problem) = server.call(method.clone(), path, Some(&server.admin), body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {problem}");
        assert!(headers.contains_key("retry-after"));
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "{method} {path} answered within the wait: {:?}",
            started.elapsed()
        );
    }
    proxy.restore();
}

/// Another server's appends reach a server's live event stream at once, not
/// at its next poll (every 5 s): on PostgreSQL every commit notifies; on
/// SQLite each server looks at the file's commit counter every 50 ms.
async fn an_append_on_one_server_reaches_another_s_event_stream_at_once(here: &Server) {
    let shared = here.database.as_ref().expect("the store").shared();
    let there = Server::start_with(shared, Some(here.admin.clone())).await;
    let head = here.n_events().await;
    let response = there
        .client
        .get(format!("{}/v1/events/stream?after={head}", there.base))
        .bearer_auth(&there.admin)
        .send()
        .await
        .expect("stream");
    let mut body = response.bytes_stream();
    let mut received = String::new();
    for n in 1..=5 {
        // Let the stream settle into waiting before the next append.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = std::time::Instant::now();
        here.create("accounts", json!({"name": format!("Notified {n}")})).await;
        let wanted = format!("id: {}\n", head + n);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !received.contains(&wanted) {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .unwrap_or_else(|_| panic!("append {n} reached the other server within 2 s"))
                .expect("open")
                .expect("bytes");
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(sent.elapsed() < Duration::from_secs(2));
    }
}

/// A running `crm serve`, killed on drop.
struct Server {
    child: Child,
    base: String,
    admin: String,
    client: Client,
    database: Option<TestDatabase>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(database: TestDatabase) -> Self {
        Self::start_with(database, None).await
    }

    /// Starts on `database`; `known_admin` is the token of an earlier start
    /// (a store that has an admin prints no new token).
    async fn start_with(database: TestDatabase, known_admin: Option<String>) -> Self {
        Self::start_with_args(database, known_admin, &[]).await
    }

    /// `start_with`, with more arguments to `crm serve`.
    async fn start_with_args(database: TestDatabase, known_admin: Option<String>, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crm-blackbox"));
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--database", &database.url])
            .args(args)
            .env("CRM_LOG", "warn");
        if let Some(schema) = &database.options.schema {
            command.args(["--schema", schema]);
        }
        Self::from_command(command, Some(database), known_admin).await
    }

    /// Runs `command`, a `crm serve` however launched, and waits for it to listen.
    async fn from_command(mut command: Command, database: Option<TestDatabase>, known_admin: Option<String>) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("crm serve starts");
        let stdout = child.stdout.take().expect("piped");
        let started = tokio::task::spawn_blocking(move || {
            let (mut admin, mut base) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(token) = line.strip_prefix("admin token: ") {
                    admin = Some(token.to_owned());
                }
                if let Some(address) = line.strip_prefix("listening on ") {
                    base = Some(address.to_owned());
                    break;
                }
            }
            (admin.or(known_admin), base)
        })
        .await;
        let (Ok((Some(admin), Some(base))), _) = (started, ()) else {
            // Never leave a server running behind a failed start.
            let _ = child.kill();
            let _ = child.wait();
            panic!("crm serve did not print its admin token and address");
        };
        Self {
            child,
            base,
            admin,
            client: Client::new(),
            database,
        }
    }

    /// A new server on a fresh database of the same backend as `server`'s,
    /// for a test that stops it; `None` where PostgreSQL is not reachable.
    async fn of_its_own_like(server: &Server) -> Option<Self> {
        let database = match server.database.as_ref().map(|d| d.kind) {
            Some(eventstore::testing::BackendKind::Postgres) => TestDatabase::postgres().await?,
            _ => TestDatabase::sqlite(),
        };
        Some(Self::start(database).await)
    }

    /// Sends SIGTERM and waits for the process to exit; hands back the store.
    fn terminate(&mut self) -> (TestDatabase, std::process::ExitStatus) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        let status = self.child.wait().expect("the server exits");
        (self.database.take().expect("the store is still ours"), status)
    }

    /// Sends SIGKILL: no shutdown of any kind; hands back the store.
    fn kill(&mut self) -> TestDatabase {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.database.take().expect("the store is still ours")
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.expect("a body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, body) = self.call(method, path, Some(&self.admin), body).await;
        (status, body)
    }

    /// The number of events in the log.
    async fn n_events(&self) -> u64 {
        let (status, report) = self.admin(Method::GET, "/v1/admin/verify", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(report["ok"], true, "the chain verifies: {report}");
        report["events"].as_u64().expect("a count")
    }

    async fn user(&self, role: &str) -> String {
        let (status, user) = self
            .admin(
                Method::POST,
                "/v1/users",
                Some(json!({"name": format!("A {role}"), "department": "Sales", "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        user["token"].as_str().expect("a token").to_owned()
    }

    /// `POST /v1/import/{kind}` with a CSV body: the import's report.
    async fn import_csv(&self, kind: &str, csv: String) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/import/{kind}", self.base))
            .bearer_auth(&self.admin)
            .body(csv)
            .send()
            .await
            .expect("answer");
        response.json().await.expect("a JSON report")
    }

    /// `GET /v1/export/{kind}.csv`: the CSV.
    async fn export_csv(&self, kind: &str) -> String {
        let response = self
            .client
            .get(format!("{}/v1/export/{kind}.csv", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("answer");
        response.text().await.expect("csv")
    }

    async fn create(&self, kind: &str, body: Value) -> Value {
        let (status, view) = self.admin(Method::POST, &format!("/v1/{kind}"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{view}");
        view
    }
}

fn id(view: &Value) -> String {
    view["id"].as_str().expect("an id").to_owned()
}

async fn records_can_be_created_read_listed_changed_and_archived(server: &Server) {
    let account = server
        .create("accounts", json!({"name": "Acme", "domain": "acme.com"}))
        .await;
    let (status, headers, ada) = server
        .call(
            Method::POST,
            "/v1/contacts",
            Some(&server.admin),
            Some(json!({"name": "Ada", "email": "ada@acme.com", "account_id": id(&account)})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["location"], format!("/v1/contacts/{}", id(&ada)).as_str());
    assert_eq!(headers["etag"], "\"1\"");
    for (field, expected) in [
        ("name", json!("Ada")),
        ("version", json!(1)),
        ("interaction_count", json!(0)),
        ("archived", json!(false)),
    ] {
        assert_eq!(ada[field], expected, "{field}");
    }
    server
        .create("contacts", json!({"name": "Grace", "account_id": id(&account)}))
        .await;
    let (status, page) = server.admin(Method::GET, "/v1/contacts?limit=1", None).await;
    assert_eq!(status, StatusCode::OK);
    let cursor = page["next_cursor"].as_str().expect("more pages");
    let (_, second) = server
        .admin(Method::GET, &format!("/v1/contacts?limit=1&cursor={cursor}"), None)
        .await;
    assert_eq!(
        (page["items"][0]["name"].clone(), second["items"][0]["name"].clone()),
        (json!("Ada"), json!("Grace"))
    );
    assert_eq!(second["next_cursor"], Value::Null);
    let (_, found) = server.admin(Method::GET, "/v1/contacts?q=GRAC", None).await;
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1));

    let path = format!("/v1/contacts/{}", id(&ada));
    let (status, changed) = server
        .admin(Method::PATCH, &path, Some(json!({"title": "Countess", "email": null})))
        .await;
    assert_eq!(
        (status, changed["version"].clone(), changed["email"].clone()),
        (StatusCode::OK, json!(2), Value::Null)
    );
    let before = server.n_events().await;
    let (status, unchanged) = server
        .admin(Method::PATCH, &path, Some(json!({"title": "Countess"})))
        .await;
    assert_eq!((status, unchanged["version"].clone()), (StatusCode::OK, json!(2)));
    assert_eq!(
        server.n_events().await,
        before,
        "a patch that changes nothing appends nothing"
    );

    let (status, _) = server.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = server.admin(Method::GET, "/v1/contacts", None).await;
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|c| c["id"] != ada["id"]),
        "archived records leave lists"
    );
    let (status, archived) = server.admin(Method::GET, &path, None).await;
    assert_eq!((status, archived["archived"].clone()), (StatusCode::OK, json!(true)));

    let deal = server
        .create(
            "deals",
            json!({"title": "Fleet", "account_id": id(&account), "amount": {"value_minor": 100000, "currency": "EUR"}}),
        )
        .await;
    let (status, moved) = server
        .admin(
            Method::POST,
            &format!("/v1/deals/{}/stage", id(&deal)),
            Some(json!({"stage": "proposal"})),
        )
        .await;
    assert_eq!((status, moved["stage"].clone()), (StatusCode::OK, json!("proposal")));
    let (status, closed) = server
        .admin(
            Method::POST,
            &format!("/v1/deals/{}/close", id(&deal)),
            Some(json!({"outcome": "won", "reason": "price"})),
        )
        .await;
    assert_eq!((status, closed["status"].clone()), (StatusCode::OK, json!("won")));
    let grace = &second["items"][0];
    let (status, call) = server.admin(Method::POST, "/v1/interactions", Some(json!({"kind": "call", "contact_id": grace["id"], "summary": "Intro", "occurred_at": "2025-01-02T03:04:05Z"}))).await;
    assert_eq!(
        (status, call["occurred_at"].clone()),
        (StatusCode::CREATED, json!("2025-01-02T03:04:05Z"))
    );
    let (_, grace_now) = server
        .admin(
            Method::GET,
            &format!("/v1/contacts/{}", grace["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(grace_now["interaction_count"], 1);
    let (status, _) = server
        .admin(Method::GET, &format!("/v1/interactions/{}", id(&call)), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// method, path, token ("admin" for the admin's), body, If-Match, expected status.
type ErrorCase = (
    Method,
    String,
    Option<&'static str>,
    Option<Value>,
    Option<&'static str>,
    StatusCode,
);

/// The names a search (`q`) finds, in list order, all pages followed.
async fn found(server: &Server, kind: &str, query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/{kind}?limit=2&q={query}{cursor}");
        let (status, page) = server.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        for item in page["items"].as_array().expect("items") {
            let name = item.get("name").or_else(|| item.get("title")).and_then(Value::as_str);
            names.push(name.expect("a name").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return names,
        }
    }
}

async fn search_finds_records_by_any_piece_of_name_email_phone_or_domain_before_and_after_a_rebuild(server: &Server) {
    let acme = server
        .create(
            "accounts",
            json!({"name": "Acme Rockets", "domain": "acme-rockets.example"}),
        )
        .await;
    server
        .create("accounts", json!({"name": "Globex", "domain": "globex.example"}))
        .await;
    for (name, email, phone) in [
        ("Ada Lovelace", "ada@analytical.example", "+44 20 7946 0018"),
        ("Grace Hopper", "grace@cobol.example", "+1 212 555 0147"),
        (
            "Adam \"Quote\" 100%_sure",
            "adam@analytical.example",
            "+33 1 23 45 67 89",
        ),
    ] {
        server
            .create("contacts", json!({"name": name, "email": email, "phone": phone}))
            .await;
    }
    server
        .create("deals", json!({"title": "Rocket fuel, 2027", "account_id": id(&acme)}))
        .await;
    let everyone: &[&str] = &["Ada Lovelace", "Grace Hopper", "Adam \"Quote\" 100%_sure"];
    let expectations: [(&str, &str, &[&str]); 14] = [
        // A piece that most rows hold is read in id order, not looked up.
        ("contacts", "example", everyone),
        // A prefix, a substring in the middle, any case.
        ("contacts", "ada", &["Ada Lovelace", "Adam \"Quote\" 100%_sure"]),
        ("contacts", "LOVEL", &["Ada Lovelace"]),
        ("contacts", "ovelac", &["Ada Lovelace"]),
        // Email and phone (digits of its E.164 form), a piece of either.
        ("contacts", "cobol.exa", &["Grace Hopper"]),
        ("contacts", "analytical", &["Ada Lovelace", "Adam \"Quote\" 100%_sure"]),
        ("contacts", "2125550", &["Grace Hopper"]),
        // Two characters: too short for trigrams, still found.
        ("contacts", "gr", &["Grace Hopper"]),
        // Quotes and LIKE wildcards are plain characters.
        ("contacts", "%22quote%22", &["Adam \"Quote\" 100%_sure"]),
        ("contacts", "100%25_", &["Adam \"Quote\" 100%_sure"]),
        ("contacts", "%25", &["Adam \"Quote\" 100%_sure"]),
        ("contacts", "nobody", &[]),
        ("accounts", "rockets.exa", &["Acme Rockets"]),
        ("deals", "fuel", &["Rocket fuel, 2027"]),
    ];
    for (kind, query, expected) in expectations {
        assert_eq!(found(server, kind, query).await, expected, "{kind}?q={query}");
    }
    // A change moves the record in the index: the old email no longer finds it.
    let (_, page) = server.admin(Method::GET, "/v1/contacts?q=lovelace", None).await;
    let path = format!("/v1/contacts/{}", id(&page["items"][0]));
    let (status, _) = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"email": "countess@lovelace.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found(server, "contacts", "analytical").await,
        ["Adam \"Quote\" 100%_sure"]
    );
    assert_eq!(found(server, "contacts", "countess").await, ["Ada Lovelace"]);
    // A rebuild swaps in tables indexed anew, and they keep following changes.
    let (status, _) = server.admin(Method::POST, "/v1/admin/rebuild", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found(server, "contacts", "countess").await, ["Ada Lovelace"]);
    assert_eq!(found(server, "accounts", "globex").await, ["Globex"]);
    server
        .create(
            "contacts",
            json!({"name": "Katherine Johnson", "email": "kj@nasa.example"}),
        )
        .await;
    assert_eq!(found(server, "contacts", "nasa.ex").await, ["Katherine Johnson"]);
    assert_eq!(
        found(server, "contacts", "ada").await,
        ["Ada Lovelace", "Adam \"Quote\" 100%_sure"]
    );
}

async fn every_error_status_of_the_contract_is_a_problem_and_appends_nothing(server: &Server) {
    let account = server.create("accounts", json!({"name": "Acme"})).await;
    let contact = server.create("contacts", json!({"name": "Ada"})).await;
    let deal = server
        .create("deals", json!({"title": "Fleet", "account_id": id(&account)}))
        .await;
    server
        .admin(
            Method::POST,
            &format!("/v1/deals/{}/close", id(&deal)),
            Some(json!({"outcome": "lost"})),
        )
        .await;
    let gone = server.create("contacts", json!({"name": "Gone"})).await;
    server
        .admin(Method::DELETE, &format!("/v1/contacts/{}", id(&gone)), None)
        .await;
    let before = server.n_events().await;
    let contact_path = format!("/v1/contacts/{}", id(&contact));
    let huge = json!({"name": "x".repeat(2 << 20)});
    let cases: Vec<ErrorCase> = vec![
        (
            Method::GET,
            "/v1/contacts".into(),
            None,
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/v1/contacts".into(),
            Some("crm_0000000000000000_00"),
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/v1/contacts".into(),
            Some("admin"),
            Some(json!({"name": "", "email": "nope"})),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/contacts".into(),
            Some("admin"),
            Some(json!({"name": "A", "owner_id": "not-a-uuid"})),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/deals".into(),
            Some("admin"),
            Some(json!({"title": "No account"})),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/deals".into(),
            Some("admin"),
            Some(json!({"title": "Too big", "account_id": uuid::Uuid::now_v7(),
                        "amount": {"value_minor": i64::MAX, "currency": "EUR"}})),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/contacts".into(),
            Some("admin"),
            Some(huge),
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::GET,
            format!("/v1/contacts/{}", uuid::Uuid::now_v7()),
            Some("admin"),
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PATCH,
            format!("/v1/contacts/{}", uuid::Uuid::now_v7()),
            Some("admin"),
            Some(json!({"title": "X"})),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/v1/leads".into(),
            Some("admin"),
            None,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/interactions".into(),
            Some("admin"),
            Some(json!({"kind": "call", "summary": "To a deleted contact", "contact_id": id(&gone)})),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PATCH,
            format!("/v1/contacts/{}", id(&gone)),
            Some("admin"),
            Some(json!({"title": "X"})),
            None,
            StatusCode::CONFLICT,
        ),
        (
            Method::PATCH,
            contact_path.clone(),
            Some("admin"),
            Some(json!({"title": "X"})),
            Some("\"7\""),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            Method::PATCH,
            contact_path.clone(),
            Some("admin"),
            Some(json!({"title": "X"})),
            Some("seven"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!("/v1/deals/{}/stage", id(&deal)),
            Some("admin"),
            Some(json!({"stage": "proposal"})),
            None,
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            format!("/v1/deals/{}/close", id(&deal)),
            Some("admin"),
            Some(json!({"outcome": "won"})),
            None,
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/v1/interactions".into(),
            Some("admin"),
            Some(json!({"kind": "call", "summary": "No subject"})),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/v1/interactions".into(),
            Some("admin"),
            Some(
                json!({"kind": "call", "summary": "Future", "contact_id": id(&contact), "occurred_at": "2999-01-01T00:00:00Z"}),
            ),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/v1/contacts?limit=abc".into(),
            Some("admin"),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/contacts?colour=red".into(),
            Some("admin"),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/events?after=-1".into(),
            Some("admin"),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/audit?since=yesterday".into(),
            Some("admin"),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/audit?actor=ann".into(),
            Some("admin"),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/reports/pipeline?as_of=30/09/2026".into(),
            Some("admin"),
            None,
            None,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, token, body, if_match, expected) in cases {
        let mut request = server.client.request(method.clone(), format!("{}{path}", server.base));
        if let Some(token) = token {
            request = request.bearer_auth(if token == "admin" { server.admin.as_str() } else { token });
        }
        if let Some(if_match) = if_match {
            request = request.header("If-Match", if_match);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), expected, "{method} {path}");
        if expected == StatusCode::PAYLOAD_TOO_LARGE {
            assert_eq!(
                response.headers()["connection"],
                "close",
                "the unread body ends the connection"
            );
        }
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let problem: Value = response.json().await.expect("problem json");
        assert_eq!(problem["status"], expected.as_u16(), "{problem}");
        assert!(
            problem["type"].is_string() && problem["title"].is_string() && problem["detail"].is_string(),
            "{problem}"
        );
    }
    let malformed = server
        .client
        .post(format!("{}/v1/contacts", server.base))
        .bearer_auth(&server.admin)
        .body("{not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let (_, invalid) = server
        .admin(Method::POST, "/v1/contacts", Some(json!({"name": "", "email": "nope"})))
        .await;
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .expect("per-field errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["name", "email"]);
    assert_eq!(server.n_events().await, before, "no refused request appended anything");
}

async fn each_role_reaches_exactly_its_routes(server: &Server) {
    let viewer = server.user("viewer").await;
    let member = server.user("member").await;
    let account = server.create("accounts", json!({"name": "Acme"})).await;
    let contact = server
        .create("contacts", json!({"name": "Ada", "account_id": id(&account)}))
        .await;
    let deal = server
        .create("deals", json!({"title": "Fleet", "account_id": id(&account)}))
        .await;
    let c = format!("/v1/contacts/{}", id(&contact));
    let d = id(&deal);
    // (method, path, body, lowest role allowed: 0 viewer, 1 member, 2 admin)
    let routes: Vec<(Method, String, Option<Value>, u8)> = vec![
        (Method::GET, "/v1/contacts".into(), None, 0),
        (Method::GET, c.clone(), None, 0),
        (Method::GET, format!("{c}/history"), None, 0),
        (Method::GET, format!("{c}/timeline"), None, 0),
        (Method::GET, "/v1/audit".into(), None, 0),
        (Method::GET, "/v1/events?after=0&limit=5".into(), None, 0),
        (Method::GET, "/v1/reports/pipeline".into(), None, 0),
        (Method::GET, "/v1/reports/data-quality".into(), None, 0),
        (Method::GET, "/v1/reports/neglected-accounts".into(), None, 0),
        (Method::GET, "/v1/reports/owners".into(), None, 0),
        (Method::GET, "/v1/users".into(), None, 0),
        (Method::POST, "/v1/contacts".into(), Some(json!({"name": "New"})), 1),
        (Method::PATCH, c.clone(), Some(json!({"title": "T"})), 1),
        (
            Method::POST,
            format!("/v1/deals/{d}/stage"),
            Some(json!({"stage": "qualified"})),
            1,
        ),
        (
            Method::POST,
            "/v1/interactions".into(),
            Some(json!({"kind": "note", "summary": "S", "contact_id": id(&contact)})),
            1,
        ),
        (
            Method::POST,
            format!("/v1/deals/{d}/close"),
            Some(json!({"outcome": "won"})),
            1,
        ),
        (
            Method::POST,
            "/v1/users".into(),
            Some(json!({"name": "X", "department": "IT", "role": "viewer"})),
            2,
        ),
        (Method::POST, "/v1/admin/rebuild".into(), None, 2),
        (Method::GET, "/v1/admin/verify".into(), None, 2),
        (Method::GET, "/v1/export/contacts.csv".into(), None, 2),
        (Method::DELETE, c.clone(), None, 1),
    ];
    for (method, path, body, lowest) in routes {
        for (rank, token) in [(0u8, viewer.as_str()), (1, member.as_str()), (2, server.admin.as_str())] {
            let (status, _, answer) = server.call(method.clone(), &path, Some(token), body.clone()).await;
            if rank < lowest {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as rank {rank}: {answer}"
                );
            } else {
                // Allowed: the role reaches the route. (The deal closes once,
                // so a second close is refused as a conflict, not a role.)
                let reached = status.is_success() || status == StatusCode::CONFLICT;
                assert!(reached, "{method} {path} as rank {rank}: {status} {answer}");
            }
        }
    }
    let (status, _, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "healthz needs no token");
    let token_id = viewer.split('_').nth(1).expect("crm_<id>_<secret>");
    let database = server.database.as_ref().expect("the server's store");
    let mut revoke = Command::new(env!("CARGO_BIN_EXE_crm-blackbox"));
    revoke.args(["--database", &database.url, "user", "revoke", token_id]);
    if let Some(schema) = &database.options.schema {
        revoke.args(["--schema", schema]);
    }
    assert!(revoke.status().expect("crm runs").success());
    // A server rereads a token it has seen within a second (TOKEN_RECHECK).
    let revoked_at = std::time::Instant::now();
    loop {
        let (status, _, _) = server.call(Method::GET, "/v1/contacts", Some(&viewer), None).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(3),
            "a revoked token still lets its holder in after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, history) = server.admin(Method::GET, &format!("{c}/history"), None).await;
    let patched_by = &history["items"][1]["actor"];
    assert_eq!(
        patched_by["name"], "A member",
        "the actor is the authenticated user: {history}"
    );
}

async fn an_idempotent_retry_returns_the_first_response_and_appends_nothing(server: &Server) {
    let send = || {
        server
            .client
            .post(format!("{}/v1/contacts", server.base))
            .bearer_auth(&server.admin)
            .header("Idempotency-Key", "import-42")
            .json(&json!({"name": "Ada", "email": "ada@acme.com"}))
            .send()
    };
    let first = send().await.expect("answer");
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.expect("json");
    let after_first = server.n_events().await;
    server
        .admin(
            Method::PATCH,
            &format!("/v1/contacts/{}", id(&first)),
            Some(json!({"title": "Later change"})),
        )
        .await;
    let retry = send().await.expect("answer");
    assert_eq!(
        (retry.status(), retry.headers()["location"].clone()),
        (StatusCode::CREATED, location)
    );
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry, first, "the retry returns the first response");
    let reordered = server
        .client
        .post(format!("{}/v1/contacts", server.base))
        .bearer_auth(&server.admin)
        .header("Idempotency-Key", "import-42")
        .header("content-type", "application/json")
        .body(r#"{ "email": "ada@acme.com",   "name": "Ada" }"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(
        reordered.status(),
        StatusCode::CREATED,
        "the same request, keys in another order, is a retry"
    );
    let misused = server
        .client
        .post(format!("{}/v1/contacts", server.base))
        .bearer_auth(&server.admin)
        .header("Idempotency-Key", "import-42")
        .json(&json!({"name": "Grace"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        misused.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "the same key for another request is refused"
    );
    assert_eq!(
        server.n_events().await,
        after_first + 1,
        "only the later PATCH appended"
    );
}

/// Sixteen PATCHes of one contact's title sent at once, with `if_match` if
/// given: for each, its number, status, ETag and body.
async fn sixteen_concurrent_title_patches(
    server: &Server,
    contact: &Value,
    if_match: Option<&str>,
) -> Vec<(usize, StatusCode, Option<reqwest::header::HeaderValue>, Value)> {
    let path = format!("{}/v1/contacts/{}", server.base, id(contact));
    let patches: Vec<_> = (0..16)
        .map(|n| {
            let mut request = server.client.patch(&path).bearer_auth(&server.admin);
            if let Some(version) = if_match {
                request = request.header("If-Match", version);
            }
            let request = request.json(&json!({"title": format!("Title {n}")}));
            tokio::spawn(async move {
                let response = request.send().await.expect("answer");
                let (status, etag) = (response.status(), response.headers().get("etag").cloned());
                (n, status, etag, response.json::<Value>().await.expect("a JSON body"))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for patch in patches {
        answers.push(patch.await.expect("task"));
    }
    answers
}

async fn of_sixteen_concurrent_patches_with_one_version_exactly_one_wins(server: &Server) {
    let contact = server.create("contacts", json!({"name": "Ada"})).await;
    let answers = sixteen_concurrent_title_patches(server, &contact, Some("\"1\"")).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|answer| answer.1).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count(),
        15,
        "{statuses:?}"
    );
    let (_, now) = server
        .admin(Method::GET, &format!("/v1/contacts/{}", id(&contact)), None)
        .await;
    assert_eq!(now["version"], 2);
}

async fn concurrent_patches_without_a_version_lose_no_update_and_answer_what_they_wrote(server: &Server) {
    let contact = server.create("contacts", json!({"name": "Ada"})).await;
    let mut versions = Vec::new();
    let mut answers = Vec::new();
    for (n, status, etag, view) in sixteen_concurrent_title_patches(server, &contact, None).await {
        assert_eq!(status, StatusCode::OK, "a lost race is retried inside: {view}");
        assert_eq!(view["title"], format!("Title {n}"), "the answer shows this write");
        let version = view["version"].as_u64().expect("a version");
        let etag = etag.expect("an ETag");
        assert_eq!(etag.to_str().ok(), Some(format!("\"{version}\"").as_str()));
        versions.push(version);
        answers.push(view);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=17).collect::<Vec<u64>>(),
        "every patch appended its own version"
    );
    let (status, now) = server
        .admin(Method::GET, &format!("/v1/contacts/{}", id(&contact)), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let last = answers.iter().find(|a| a["version"] == 17).expect("the last answer");
    assert_eq!(&now, last, "the answer to a write equals a later read of that version");
    let (_, history) = server
        .admin(Method::GET, &format!("/v1/contacts/{}/history", id(&contact)), None)
        .await;
    assert_eq!(history["items"].as_array().map(Vec::len), Some(17), "{history}");
}

/// A second `crm serve` on the same database: what one server appends is
/// in the other's reads, lists and reports as soon as the append answers,
/// because appends fold into the shared tables in their own transaction.
async fn two_servers_on_one_database_see_each_others_writes_at_once(server: &Server) {
    let database = server.database.as_ref().expect("the store").shared();
    let other = Server::start_with(database, Some(server.admin.clone())).await;
    let account = server.create("accounts", json!({"name": "Acme"})).await;
    for n in 0..25 {
        let deal = json!({"title": format!("Deal {n}"), "account_id": id(&account)});
        created_here_seen_there(server, &other, "deals", deal).await;
        let contact = json!({"name": format!("Person {n}"), "account_id": id(&account)});
        created_here_seen_there(&other, server, "contacts", contact).await;
    }
    let query = format!("/v1/deals?account_id={}&limit=500", id(&account));
    let (_, listed) = other.admin(Method::GET, &query, None).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(25));
    let (_, here) = server.admin(Method::GET, "/v1/reports/pipeline", None).await;
    let (_, there) = other.admin(Method::GET, "/v1/reports/pipeline", None).await;
    assert_eq!(here["totals"]["count"], 25);
    assert_eq!(here["totals"], there["totals"], "both servers report the same pipeline");
    let (status, _) = other.admin(Method::POST, "/v1/admin/rebuild", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, rebuilt) = server.admin(Method::GET, "/v1/reports/pipeline", None).await;
    assert_eq!(
        rebuilt["totals"], here["totals"],
        "a rebuild on one agrees with the live tables"
    );
}

/// Behind a load balancer that is not sticky: each write's answer names the
/// log position it reached, and a read on another server that sends it
/// back answers from read models at least that far along.
async fn a_client_reads_its_own_writes_on_any_server_by_the_position_they_reached(server: &Server) {
    let database = server.database.as_ref().expect("the store").shared();
    let other = Server::start_with(database, Some(server.admin.clone())).await;
    let position_of = |headers: &reqwest::header::HeaderMap| -> u64 {
        let raw = headers.get("crm-position").expect("every answer names its position");
        raw.to_str().expect("text").parse().expect("a number")
    };
    for n in 0..10 {
        let (here, there) = if n % 2 == 0 { (server, &other) } else { (&other, server) };
        let (status, headers, contact) = here
            .call(
                Method::POST,
                "/v1/contacts",
                Some(&here.admin),
                Some(json!({"name": format!("Own {n}")})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{contact}");
        let written = position_of(&headers);
        let response = there
            .client
            .get(format!("{}/v1/contacts/{}", there.base, id(&contact)))
            .bearer_auth(&there.admin)
            .header("Crm-Min-Position", written.to_string())
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            position_of(response.headers()) >= written,
            "the read reflects the write"
        );
        let (_, headers, list) = there
            .call(Method::GET, "/v1/contacts?limit=500", Some(&there.admin), None)
            .await;
        assert!(position_of(&headers) >= written, "{list}");
    }
    let head = server.n_events().await;
    for (sent, why) in [
        ("soon", "not a number"),
        ("-1", "not a position"),
        (&*(head + 1_000).to_string(), "past the log's end"),
    ] {
        let response = other
            .client
            .get(format!("{}/v1/contacts", other.base))
            .bearer_auth(&other.admin)
            .header("Crm-Min-Position", sent)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
}

/// Each server remembers the states it last wrote; the other server moving
/// a record on must never let one decide on an old state: no update lost,
/// If-Match judged against the record's real version.
async fn two_servers_writing_one_record_in_turn_lose_nothing(server: &Server) {
    let database = server.database.as_ref().expect("the store").shared();
    let other = Server::start_with(database, Some(server.admin.clone())).await;
    let contact = server.create("contacts", json!({"name": "Ada", "tags": ["t0"]})).await;
    let path = format!("/v1/contacts/{}", id(&contact));
    let patch = |at: &Server, if_match: Option<u64>, n: usize| {
        let mut request = at.client.patch(format!("{}{path}", at.base)).bearer_auth(&at.admin);
        if let Some(version) = if_match {
            request = request.header("If-Match", format!("\"{version}\""));
        }
        let tags: Vec<String> = (0..=n).map(|k| format!("t{k}")).collect();
        async move {
            let response = request.json(&json!({"tags": tags})).send().await.expect("answer");
            (response.status(), response.json::<Value>().await.expect("a JSON body"))
        }
    };
    // `other` writes unpinned, `server` pinned; each finds the record moved
    // on by the other since it last wrote.
    let mut version = contact["version"].as_u64().expect("a version");
    for n in 1..=12 {
        let (status, written) = patch(&other, None, 2 * n - 1).await;
        assert_eq!(status, StatusCode::OK, "{written}");
        version += 1;
        assert_eq!(written["version"], version, "an unpinned write lands on the last one");
        let (status, refused) = patch(server, Some(version - 1), 0).await;
        assert_eq!(
            status,
            StatusCode::PRECONDITION_FAILED,
            "pinned to the version this server wrote last, now old: {refused}"
        );
        let (status, written) = patch(server, Some(version), 2 * n).await;
        assert_eq!(status, StatusCode::OK, "pinned to the other server's write: {written}");
        version += 1;
        assert_eq!(written["version"], version);
    }
    let (_, stored) = other.admin(Method::GET, &path, None).await;
    assert_eq!(stored["version"], version);
    let tags = stored["tags"].as_array().map(Vec::len);
    assert_eq!(tags, Some(25), "every write's tags are there: {stored}");
}

/// Two rebuilds at once would fill the same aside tables and swap in each
/// other's half-folded rows: while one runs (here, played by another
/// process holding its lock), the API and the CLI refuse another.
async fn one_rebuild_runs_at_a_time_per_database(server: &Server) {
    server.create("contacts", json!({"name": "Ada"})).await;
    let database = server.database.as_ref().expect("the store");
    let held = RebuildHeld::take(database).await;
    let (status, refused) = server.admin(Method::POST, "/v1/admin/rebuild", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("another rebuild")),
        "{refused}"
    );
    let mut cli = Command::new(env!("CARGO_BIN_EXE_crm-blackbox"));
    cli.args(["--database", &database.url, "rebuild"]);
    if let Some(schema) = &database.options.schema {
        cli.args(["--schema", schema]);
    }
    let output = cli.output().expect("crm runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another rebuild"), "{stderr}");
    held.release().await;
    let (status, rebuilt) = server.admin(Method::POST, "/v1/admin/rebuild", None).await;
    assert_eq!(status, StatusCode::OK, "once the other ends: {rebuilt}");
    let (_, listed) = server.admin(Method::GET, "/v1/contacts", None).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

/// The rebuild lock, held as another process would hold it.
enum RebuildHeld {
    File(std::fs::File),
    Session(eventstore::testing::Session),
}

impl RebuildHeld {
    async fn take(database: &TestDatabase) -> Self {
        match database.url.strip_prefix("sqlite://") {
            Some(path) => {
                let file = std::fs::File::create(format!("{path}.rebuild-lock")).expect("the lock file opens");
                file.try_lock().expect("nobody holds it yet");
                Self::File(file)
            }
            None => Self::Session(
                database
                    .session("SELECT pg_advisory_lock(hashtext('crm.rebuild.' || current_schema()))")
                    .await
                    .expect("the advisory lock is taken"),
            ),
        }
    }

    /// Gives the lock up, as the other process ending would, and waits
    /// until it is free.
    async fn release(self) {
        match self {
            Self::File(file) => drop(file),
            Self::Session(session) => session.close().await.expect("the session ends"),
        }
    }
}

/// Creates a record through `here` and reads it through `there` at once:
/// the same view, no waiting.
async fn readiness_turns_away_traffic_while_commits_fail_and_comes_back(server: &Server) {
    let readiness = || async {
        let response = server
            .client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .expect("the server answers");
        let retry_after = response.headers().get("retry-after").cloned();
        let status = response.status();
        (status, retry_after, response.json::<Value>().await.expect("json"))
    };
    server.create("contacts", json!({"name": "Ada"})).await;
    let (status, _, ready) = readiness().await;
    assert_eq!((status, &ready["ready"]), (StatusCode::OK, &json!(true)), "{ready}");
    assert_eq!(ready["read_models"]["lag"], 0, "{ready}");
    // Every commit now breaks a constraint checked only at COMMIT.
    let database = server.database.as_ref().expect("the store");
    database.fail_commits().await.expect("set the trap");
    let (status, _) = server
        .admin(Method::POST, "/v1/contacts", Some(json!({"name": "Lost"})))
        .await;
    assert!(
        status.is_server_error(),
        "the failed commit is the server's error: {status}"
    );
    let (status, retry_after, not_ready) = readiness().await;
    assert_eq!(
        (status, &not_ready["ready"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!(false)),
        "{not_ready}"
    );
    assert!(retry_after.is_some(), "a load balancer is told when to ask again");
    assert_eq!(not_ready["writes"]["ok"], false, "{not_ready}");
    assert!(
        not_ready["writes"]["last_error"].is_string(),
        "the cause is named: {not_ready}"
    );
    assert_eq!(not_ready["database"]["ok"], true, "reads still work: {not_ready}");
    database.let_commits_through().await.expect("remove the trap");
    let (status, _) = server
        .admin(Method::POST, "/v1/contacts", Some(json!({"name": "Back"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, ready) = readiness().await;
    assert_eq!((status, &ready["ready"]), (StatusCode::OK, &json!(true)), "{ready}");
    let (status, _, _) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "liveness");
}

/// The value of the Prometheus sample `series` (name and labels exactly).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_count_requests_by_route_commits_and_read_model_lag(server: &Server) {
    let scrape = || async {
        let response = server
            .client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("text")
    };
    let created = r#"crm_http_requests_total{method="POST",route="/v1/{kind}",status="201"}"#;
    let before = sample(&scrape().await, created).unwrap_or(0.0);
    for name in ["Ada", "Grace", "Edsger"] {
        server.create("contacts", json!({ "name": name })).await;
    }
    let contact = server.create("contacts", json!({"name": "Barbara"})).await;
    let (status, _) = server
        .admin(Method::GET, &format!("/v1/contacts/{}", id(&contact)), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let metrics = scrape().await;
    assert_eq!(sample(&metrics, created), Some(before + 4.0), "{metrics}");
    assert!(
        sample(
            &metrics,
            r#"crm_http_requests_total{method="GET",route="/v1/{kind}/{id}",status="200"}"#
        ) >= Some(1.0),
        "routes are patterns, not paths: {metrics}"
    );
    assert!(
        sample(&metrics, "crm_commit_batch_requests_count") >= Some(4.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("crm_commit_seconds_bucket{le="),
        "latencies are histograms: {metrics}"
    );
    assert_eq!(sample(&metrics, "crm_read_model_lag_events"), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "crm_writes_failing"), Some(0.0), "{metrics}");
}

async fn created_here_seen_there(here: &Server, there: &Server, kind: &str, body: Value) {
    let written = here.create(kind, body).await;
    let (status, seen) = there
        .admin(Method::GET, &format!("/v1/{kind}/{}", id(&written)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "the other server sees the {kind} at once");
    assert_eq!(seen, written, "and sees it as written");
}

async fn history_timeline_audit_and_reports_tell_who_changed_what(server: &Server) {
    let member = server.user("member").await;
    let (_, _, account) = server
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&member),
            Some(json!({"name": "Quiet Ltd"})),
        )
        .await;
    let (_, _, contact) = server
        .call(
            Method::POST,
            "/v1/contacts",
            Some(&member),
            Some(json!({"name": "Ada", "account_id": id(&account), "lifecycle_stage": "customer"})),
        )
        .await;
    server
        .call(
            Method::PATCH,
            &format!("/v1/contacts/{}", id(&contact)),
            Some(&member),
            Some(json!({"phone": "+44 20 7946 0958"})),
        )
        .await;
    server.call(Method::POST, "/v1/interactions", Some(&member), Some(json!({"kind": "call", "summary": "Old call", "contact_id": id(&contact), "occurred_at": "2024-01-01T00:00:00Z"}))).await;
    let (_, history) = server
        .admin(Method::GET, &format!("/v1/contacts/{}/history", id(&contact)), None)
        .await;
    let entry = &history["items"][1];
    assert_eq!(entry["changes"]["phone"], json!({"from": null, "to": "+442079460958"}));
    assert_eq!(
        (entry["actor"]["name"].clone(), entry["actor"]["department"].clone()),
        (json!("A member"), json!("Sales"))
    );
    let (_, timeline) = server
        .admin(Method::GET, &format!("/v1/contacts/{}/timeline", id(&contact)), None)
        .await;
    let items: Vec<&str> = timeline["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["item"].as_str())
        .collect();
    assert_eq!(
        items,
        ["change", "change", "interaction"],
        "newest first; the call happened in 2024"
    );
    let actor = entry["actor"]["id"].as_str().expect("actor id");
    let (_, audit) = server
        .admin(Method::GET, &format!("/v1/audit?actor_id={actor}"), None)
        .await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(4));
    let rows = audit["items"].as_array().expect("rows");
    let phone = rows
        .iter()
        .find(|row| row["type"] == "ContactUpdated")
        .expect("the phone change is audited");
    assert_eq!(
        phone["changes"]["phone"],
        json!({"from": null, "to": "+442079460958"}),
        "{phone}"
    );
    assert_eq!(phone["actor"]["name"], "A member");
    let call = rows
        .iter()
        .find(|row| row["type"] == "InteractionLogged")
        .expect("the call is audited");
    assert_eq!(call["changes"], Value::Null, "a call changes no record's fields");
    // Business time: the call happened in 2024, whenever it was recorded.
    let path = format!("/v1/audit?actor_id={actor}&occurred_until=2024-12-31");
    let (status, in_2024) = server.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{in_2024}");
    let types: Vec<&str> = in_2024["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(types, ["InteractionLogged"], "{in_2024}");
    let path = format!("/v1/audit?actor_id={actor}&recorded_until=2024-12-31");
    let (_, recorded_in_2024) = server.admin(Method::GET, &path, None).await;
    assert_eq!(
        recorded_in_2024["items"],
        json!([]),
        "recorded today: {recorded_in_2024}"
    );
    let (_, neglected) = server
        .admin(Method::GET, "/v1/reports/neglected-accounts?days=30", None)
        .await;
    assert_eq!(neglected["accounts"][0]["name"], "Quiet Ltd", "{neglected}");
    let (_, before_any) = server
        .admin(Method::GET, "/v1/reports/data-quality?as_of=2020-01-01T00:00:00Z", None)
        .await;
    assert_eq!(before_any["summary"]["records"], 0, "as of 2020 nothing existed");
    let (status, by_date) = server
        .admin(Method::GET, "/v1/reports/data-quality?as_of=2020-01-01", None)
        .await;
    assert_eq!(
        (status, &by_date["as_of"]),
        (StatusCode::OK, &json!("2020-01-01T23:59:59.999999Z")),
        "a date alone reports as of the end of that day"
    );
    let (_, quality) = server
        .admin(Method::GET, "/v1/reports/data-quality?stale_days=0", None)
        .await;
    assert!(quality["summary"]["records"].as_u64() >= Some(2));
    for report in ["pipeline", "owners"] {
        let (status, _) = server.admin(Method::GET, &format!("/v1/reports/{report}"), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, rebuilt) = server.admin(Method::POST, "/v1/admin/rebuild", None).await;
    assert_eq!(
        (status, rebuilt["events"].as_u64()),
        (StatusCode::OK, Some(server.n_events().await))
    );
}

async fn report_lists_page_by_cursor_narrow_by_filter_and_refuse_what_they_cannot_answer(server: &Server) {
    let account = server.create("accounts", json!({"name": "Acme"})).await;
    for n in 0..6 {
        server.create("contacts", json!({"name": format!("Person {n}")})).await;
    }
    let (status, report) = server
        .admin(Method::GET, "/v1/reports/data-quality?limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["summary"]["incomplete"], 7,
        "six contacts and the account: {report}"
    );
    assert_eq!(report["incomplete"].as_array().map(Vec::len), Some(2));
    let mut cursor = report["next_cursors"]["incomplete"].as_str().map(str::to_owned);
    let mut seen: Vec<Value> = report["incomplete"].as_array().cloned().unwrap_or_default();
    while let Some(after) = cursor {
        let path = format!("/v1/reports/data-quality/incomplete?limit=2&cursor={after}");
        let (status, page) = server.admin(Method::GET, &path, None).await;
        assert_eq!((status, page["total"].as_u64()), (StatusCode::OK, Some(7)), "{page}");
        seen.extend(page["items"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    let mut ids: Vec<&str> = seen.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "every entry once: {seen:?}");
    let (_, accounts) = server
        .admin(Method::GET, "/v1/reports/data-quality/incomplete?kind=account", None)
        .await;
    assert_eq!(accounts["items"][0]["id"], account["id"], "{accounts}");
    assert_eq!(accounts["total"], 1);
    let (_, missing_account) = server
        .admin(Method::GET, "/v1/reports/data-quality/incomplete?missing=domain", None)
        .await;
    assert_eq!(missing_account["total"], 1, "only the account has a domain to miss");
    let ada = server
        .create(
            "contacts",
            json!({"name": "Ada", "account_id": account["id"], "lifecycle_stage": "customer"}),
        )
        .await;
    let path = format!(
        "/v1/reports/data-quality/incomplete?account_id={}",
        account["id"].as_str().unwrap_or_default()
    );
    let (_, of_account) = server.admin(Method::GET, &path, None).await;
    let mut ids: Vec<&str> = of_account["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = [account["id"].as_str(), ada["id"].as_str()].map(Option::unwrap_or_default);
    expected.sort_unstable();
    assert_eq!(ids, expected, "the account and its contact: {of_account}");
    let (_, customers) = server
        .admin(
            Method::GET,
            "/v1/reports/data-quality/incomplete?lifecycle=customer",
            None,
        )
        .await;
    assert_eq!(customers["total"], 1, "{customers}");
    assert_eq!(customers["items"][0]["id"], ada["id"]);
    let deal = server
        .create("deals", json!({"title": "Fleet", "account_id": account["id"]}))
        .await;
    let (status, pipeline) = server
        .admin(Method::GET, "/v1/reports/pipeline?from=2000-01-01", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{pipeline}");
    assert_eq!(
        pipeline["period"]["from"], "2000-01-01T00:00:00Z",
        "a date is its start"
    );
    assert_eq!(
        pipeline["period"]["new"], 1,
        "the deal is new in the period: {pipeline}"
    );
    let path = format!("/v1/deals/{}/close", deal["id"].as_str().unwrap_or_default());
    let (status, closed) = server.admin(Method::POST, &path, Some(json!({"outcome": "won"}))).await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    let (_, pipeline) = server
        .admin(Method::GET, "/v1/reports/pipeline?from=2000-01-01", None)
        .await;
    assert_eq!(
        (&pipeline["period"]["won"], &pipeline["period"]["win_rate"]),
        (&json!(1), &json!(1.0)),
        "{pipeline}"
    );
    let (_, without) = server.admin(Method::GET, "/v1/reports/pipeline", None).await;
    assert!(without.get("period").is_none(), "no period unless asked: {without}");
    let before = server.n_events().await;
    for (path, expected) in [
        ("/v1/reports/data-quality?owner=someone", StatusCode::BAD_REQUEST),
        (
            "/v1/reports/data-quality/stale?cursor=not-a-cursor",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/reports/data-quality?cursor=1.x", StatusCode::BAD_REQUEST),
        ("/v1/reports/data-quality/incomplete?kind=user", StatusCode::BAD_REQUEST),
        (
            "/v1/reports/data-quality/incomplete?missing=love",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/reports/pipeline?as_of=yesterday", StatusCode::BAD_REQUEST),
        ("/v1/reports/pipeline?lifecycle=customer", StatusCode::BAD_REQUEST),
        (
            "/v1/reports/pipeline?from=2026-02-01&as_of=2026-01-01",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/reports/neglected-accounts?stage=lead", StatusCode::BAD_REQUEST),
        ("/v1/reports/data-quality?lifecycle=churned", StatusCode::BAD_REQUEST),
        ("/v1/reports/owners?stage=nowhere", StatusCode::BAD_REQUEST),
        ("/v1/reports/owners?account_id=acme", StatusCode::BAD_REQUEST),
        ("/v1/reports/data-quality/everything", StatusCode::NOT_FOUND),
    ] {
        let (status, problem) = server.admin(Method::GET, path, None).await;
        assert_eq!(status, expected, "{path}: {problem}");
        assert_eq!(
            problem["status"],
            expected.as_u16(),
            "{path} answers problem+json: {problem}"
        );
    }
    assert_eq!(server.n_events().await, before);
}

async fn the_event_stream_delivers_a_new_event(server: &Server) {
    let head = server.n_events().await;
    let response = server
        .client
        .get(format!("{}/v1/events/stream?after={head}", server.base))
        .bearer_auth(&server.admin)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    server.create("accounts", json!({"name": "Streamed"})).await;
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !received.contains("AccountCreated") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("an event arrives in time")
            .expect("open")
            .expect("bytes");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains(&format!("id: {}", head + 1)), "{received}");
    assert!(received.contains("\"name\":\"Streamed\""), "{received}");
}

/// Every contact's id, paging through the list.
async fn all_contacts(server: &Server) -> Vec<Value> {
    let (mut items, mut cursor) = (Vec::new(), String::new());
    loop {
        let (status, page) = server
            .admin(Method::GET, &format!("/v1/contacts?limit=500{cursor}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return items,
        }
    }
}

async fn external_ids_stay_unique_among_live_records_across_servers_imports_and_an_upgrade(server: &Server) {
    const ROWS: usize = 300;
    let database = server.database.as_ref().expect("the store").shared();
    let other = Server::start_with(database, Some(server.admin.clone())).await;
    let mut csv = String::from("external_id,name,email\n");
    for n in 0..ROWS {
        csv.push_str(&format!("C-{n},Person {n},p{n}@example.com\n"));
    }
    // One file imported through both servers at once, as two operators might.
    let (here, there) = tokio::join!(
        server.import_csv("contacts", csv.clone()),
        other.import_csv("contacts", csv.clone())
    );
    let total = |report: &Value, field: &str| report[field].as_u64().expect("a count");
    for report in [&here, &there] {
        assert_eq!(report["errors"], json!([]), "{report}");
        let rows = total(report, "created") + total(report, "updated") + total(report, "unchanged");
        assert_eq!(rows, ROWS as u64, "{report}");
    }
    assert_eq!(
        total(&here, "created") + total(&there, "created"),
        ROWS as u64,
        "each row was created once: {here} {there}"
    );
    let contacts = all_contacts(server).await;
    assert_eq!(contacts.len(), ROWS, "one contact per external id");

    // A create or a change to a held external id is refused, naming the holder.
    let holder = contacts
        .iter()
        .find(|c| c["external_id"] == "C-7")
        .expect("C-7 is there");
    let before = server.n_events().await;
    let (status, problem) = other
        .admin(
            Method::POST,
            "/v1/contacts",
            Some(json!({"name": "Copy", "external_id": "C-7"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("external-id-taken")),
        "{problem}"
    );
    assert_eq!(problem["errors"][0]["field"], "external_id");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains(&id(holder))),
        "{problem}"
    );
    let someone = contacts
        .iter()
        .find(|c| c["external_id"] == "C-8")
        .expect("C-8 is there");
    let (status, problem) = server
        .admin(
            Method::PATCH,
            &format!("/v1/contacts/{}", id(someone)),
            Some(json!({"external_id": "C-7"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(server.n_events().await, before, "a refused write appends nothing");

    // Archiving the holder, or moving it to another id, frees its external id.
    let (status, _) = server
        .admin(Method::DELETE, &format!("/v1/contacts/{}", id(holder)), None)
        .await;
    assert!(status.is_success(), "{status}");
    other
        .create("contacts", json!({"name": "Successor", "external_id": "C-7"}))
        .await;
    let (status, moved) = server
        .admin(
            Method::PATCH,
            &format!("/v1/contacts/{}", id(someone)),
            Some(json!({"external_id": "C-8b"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    server
        .create("contacts", json!({"name": "Heir", "external_id": "C-8"}))
        .await;

    // A store written before external ids were claimed: a server starting on
    // it claims every live record's once, and the rule holds from then on.
    let database = server.database.as_ref().expect("the store");
    database
        .execute_raw("DELETE FROM claims; INSERT INTO claims_unfilled (up_to_position) VALUES (1)")
        .await
        .expect("forget the claims");
    let (status, _) = server
        .admin(
            Method::POST,
            "/v1/contacts",
            Some(json!({"name": "Unchecked", "external_id": "C-9"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "without claims, nothing stops a duplicate");
    let upgraded = Server::start_with(database.shared(), Some(server.admin.clone())).await;
    for (taken, kept_by) in [
        ("C-7", "Successor"),
        ("C-8", "Heir"),
        ("C-10", "Person 10"),
        ("C-9", "Person 9"),
    ] {
        let (status, problem) = upgraded
            .admin(
                Method::POST,
                "/v1/contacts",
                Some(json!({"name": "Late", "external_id": taken})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{taken}: {problem}");
        let holder_id = problem["errors"][0]["message"]
            .as_str()
            .expect("a holder")
            .rsplit(' ')
            .next()
            .expect("an id");
        let (_, kept) = upgraded
            .admin(Method::GET, &format!("/v1/contacts/{holder_id}"), None)
            .await;
        assert_eq!(kept["name"], kept_by, "the record that took {taken} first keeps it");
    }
    let (status, _) = upgraded
        .admin(
            Method::POST,
            "/v1/contacts",
            Some(json!({"name": "Free", "external_id": "C-8b-not"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

async fn a_write_that_makes_a_likely_duplicate_goes_through_and_names_it(server: &Server) {
    let create = |kind: &'static str, body: Value| async move {
        let (status, view) = server
            .admin(Method::POST, &format!("/v1/{kind}?warn=duplicates"), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{view}");
        view
    };
    let first = create("contacts", json!({"name": "Ada", "email": "ada@example.com"})).await;
    assert!(first.get("possible_duplicates").is_none(), "{first}");
    let second = create("contacts", json!({"name": "Ada L.", "email": "ADA@example.com"})).await;
    assert_eq!(
        second["possible_duplicates"],
        json!([{"id": first["id"], "reason": "same email"}]),
        "a warning, not a refusal: {second}"
    );
    let other = create("contacts", json!({"name": "Grace", "email": "grace@example.com"})).await;
    assert!(other.get("possible_duplicates").is_none(), "{other}");
    let (status, changed) = server
        .admin(
            Method::PATCH,
            &format!("/v1/contacts/{}?warn=duplicates", id(&other)),
            Some(json!({"email": "ada@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let named: Vec<&str> = changed["possible_duplicates"]
        .as_array()
        .expect("named")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(named.len(), 2, "{changed}");
    let acme = create("accounts", json!({"name": "Acme", "domain": "acme.com"})).await;
    let again = create(
        "accounts",
        json!({"name": "Acme Inc", "domain": "https://www.acme.com/"}),
    )
    .await;
    assert_eq!(
        again["possible_duplicates"],
        json!([{"id": acme["id"], "reason": "same domain"}])
    );
    let (_, read) = server
        .admin(Method::GET, &format!("/v1/accounts/{}", id(&again)), None)
        .await;
    assert!(
        read.get("possible_duplicates").is_none(),
        "a read is the view alone: {read}"
    );
    // Unasked, a write answers the view alone (the check costs a read).
    let (status, plain) = server
        .admin(
            Method::POST,
            "/v1/accounts",
            Some(json!({"name": "Acme 3", "domain": "acme.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(plain.get("possible_duplicates").is_none(), "{plain}");
    let (status, _) = server
        .admin(
            Method::POST,
            "/v1/accounts?warn=everything",
            Some(json!({"name": "Acme 4"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown warning is refused");

    // An import names the rows whose new record looks like a duplicate.
    let post = |query: &'static str, csv: &'static str| async move {
        let response = server
            .client
            .post(format!("{}/v1/import/contacts{query}", server.base))
            .bearer_auth(&server.admin)
            .body(csv)
            .send()
            .await
            .expect("answer");
        let status = response.status();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    };
    let csv = "name,email\nAda Again,Ada@Example.com\nEdsger,edsger@example.com\n";
    let (status, report) = post("?warn=duplicates", csv).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["created"], 2, "imported either way: {report}");
    let listed = report["possible_duplicates"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{report}");
    assert_eq!(listed[0]["line"], 2, "{report}");
    let named: Vec<&Value> = listed[0]["records"]
        .as_array()
        .map(|records| records.iter().map(|r| &r["id"]).collect())
        .unwrap_or_default();
    assert!(
        named.contains(&&first["id"]) && named.contains(&&second["id"]),
        "both earlier Adas, by email: {report}"
    );
    let (_, unasked) = post("", "name,email\nAda Thrice,ada@example.com\n").await;
    assert!(unasked.get("possible_duplicates").is_none(), "{unasked}");
    let (status, _) = post("?warn=all", "name\nX\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn import_export_import_round_trips_and_a_reimport_changes_nothing(server: &Server) {
    let csv = "external_id,name,domain,created_at\nA-1,Acme,acme.com,2019-05-01\nA-2,,bad,2019-05-02\nA-3,Initech,initech.com,2019-06-01T10:00:00Z\n";
    let import = |body: String, kind: &'static str| {
        server
            .client
            .post(format!("{}/v1/import/{kind}", server.base))
            .bearer_auth(&server.admin)
            .body(body)
            .send()
    };
    let first: Value = import(csv.into(), "accounts")
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            first["created"].clone(),
            first["updated"].clone(),
            first["unchanged"].clone()
        ),
        (json!(2), json!(0), json!(0)),
        "{first}"
    );
    assert_eq!(
        first["errors"][0]["line"], 3,
        "the bad row is named by its line: {first}"
    );
    let contacts = "external_id,name,email,account_external_id,tags\nC-1,Ada,ada@acme.com,A-1,vip;partner\n";
    let imported: Value = import(contacts.into(), "contacts")
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(imported["created"], 1, "{imported}");
    // An `_external_id` column names the old system's id and nothing else:
    // the account's name there finds nothing.
    let by_name = server
        .import_csv(
            "contacts",
            "external_id,name,account_external_id\nC-9,Bea,Acme\n".into(),
        )
        .await;
    assert_eq!(by_name["failed"], 1, "{by_name}");
    assert!(
        by_name["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("account_external_id \"Acme\" names no live account")),
        "{by_name}"
    );
    let again: Value = import(csv.into(), "accounts")
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (again["created"].clone(), again["unchanged"].clone()),
        (json!(0), json!(2)),
        "{again}"
    );
    let before = server.n_events().await;
    let exported = server
        .client
        .get(format!("{}/v1/export/accounts.csv", server.base))
        .bearer_auth(&server.admin)
        .send()
        .await
        .expect("answer");
    assert_eq!(exported.headers()["content-type"], "text/csv; charset=utf-8");
    let exported = exported.text().await.expect("csv");
    let reimport: Value = import(exported.clone(), "accounts")
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            reimport["created"].clone(),
            reimport["unchanged"].clone(),
            reimport["errors"].clone()
        ),
        (json!(0), json!(2), json!([])),
        "{reimport}"
    );
    let contacts_csv = server.export_csv("contacts").await;
    let reimport: Value = import(contacts_csv, "contacts")
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(reimport["unchanged"], 1, "{reimport}");
    assert_eq!(
        server.n_events().await,
        before,
        "re-importing the export changes nothing"
    );
    let (_, accounts) = server.admin(Method::GET, "/v1/accounts?q=acme", None).await;
    assert_eq!(
        accounts["items"][0]["created_at"], "2019-05-01T00:00:00Z",
        "legacy history kept"
    );
    // Rows go in several at a time, but the file's last row for a record
    // is the one that stays.
    let rows: String = (0..40).fold("external_id,name\n".to_owned(), |csv, n| {
        csv + &format!("K-{},Version {n}\n", n % 2)
    });
    let report = server.import_csv("contacts", rows).await;
    assert_eq!(
        (&report["created"], &report["updated"]),
        (&json!(2), &json!(38)),
        "{report}"
    );
    let (_, found) = server.admin(Method::GET, "/v1/contacts?q=version", None).await;
    let mut names: Vec<&str> = found["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Version 38", "Version 39"], "{found}");
    // Deals, closed ones among them, come back unchanged too: a closed
    // deal's row names the stage it closed in, which is no move.
    let deals = "external_id,title,account_external_id,stage,status,amount_value_minor,amount_currency,closed_at\n\
                 D-1,Won one,A-1,proposal,won,100000,EUR,2020-01-10\nD-2,Open one,A-3,qualified,open,,,\n";
    let first = server.import_csv("deals", deals.into()).await;
    assert_eq!((&first["created"], &first["failed"]), (&json!(2), &json!(0)), "{first}");
    let before = server.n_events().await;
    for csv in [deals.to_owned(), server.export_csv("deals").await] {
        let again = server.import_csv("deals", csv).await;
        assert_eq!(
            (&again["unchanged"], &again["failed"]),
            (&json!(2), &json!(0)),
            "{again}"
        );
    }
    assert_eq!(
        server.n_events().await,
        before,
        "a deals file imported twice changes nothing"
    );
}

async fn sigterm_lets_in_flight_requests_finish_and_loses_nothing_acknowledged(server: &Server) {
    // The harness hands out a shared server; this test needs one of its own to stop.
    let Some(mut own) = Server::of_its_own_like(server).await else {
        return;
    };
    // Writers that keep the server busy; SIGTERM comes once some of their
    // creates are answered (not after a fixed pause, which a loaded machine
    // can spend before the first request even arrives), so others are in
    // flight when it does.
    let (writers, answered) = keep_creating(&own, "accounts");
    for _ in 0..1_000 {
        if answered.load(std::sync::atomic::Ordering::Relaxed) >= 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (database, status) = tokio::task::block_in_place(|| own.terminate());
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("task"));
    }
    assert!(
        acknowledged.len() >= 16,
        "the writers were answered before the shutdown: {}",
        acknowledged.len()
    );
    let restarted = Server::start_with(database, Some(own.admin.clone())).await;
    for account in &acknowledged {
        let (status, _) = restarted
            .admin(Method::GET, &format!("/v1/accounts/{account}"), None)
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged account {account} survived the shutdown"
        );
    }
    assert!(
        restarted.n_events().await > acknowledged.len() as u64,
        "the admin and every acknowledged account are in the log"
    );
}

/// Eight writers creating `kind` records on `server` without pause, each
/// until a create is not answered 201 (or after 10,000), handing back the
/// ids it was answered; and the count of answers so far.
fn keep_creating(
    server: &Server,
    kind: &'static str,
) -> (
    Vec<tokio::task::JoinHandle<Vec<String>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers = (0..8)
        .map(|writer| {
            let (client, base, admin) = (server.client.clone(), server.base.clone(), server.admin.clone());
            let answered = std::sync::Arc::clone(&answered);
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in 0..10_000 {
                    let request = client
                        .post(format!("{base}/v1/{kind}"))
                        .bearer_auth(&admin)
                        .json(&json!({"name": format!("Writer {writer} {kind} {n}")}));
                    let Ok(response) = request.send().await else { break };
                    if response.status() != StatusCode::CREATED {
                        break;
                    }
                    match response.json::<Value>().await {
                        Ok(view) => acknowledged.push(id(&view)),
                        Err(_) => break,
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                acknowledged
            })
        })
        .collect();
    (writers, answered)
}

/// Writers create contacts without pause; the server is SIGKILLed under
/// them. Every create that was answered 201 must be in the log and in the
/// read models after a restart (they commit in one transaction), and the
/// read models must agree with a rebuild from the log.
async fn sigkill_mid_write_loses_no_acknowledged_write_from_log_or_read_models(server: &Server) {
    let Some(mut own) = Server::of_its_own_like(server).await else {
        return;
    };
    let (writers, _) = keep_creating(&own, "contacts");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let database = tokio::task::block_in_place(|| own.kill());
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("task"));
    }
    assert!(acknowledged.len() > 8, "writes were acknowledged before the kill");
    let restarted = Server::start_with(database, Some(own.admin.clone())).await;
    for contact in &acknowledged {
        let (status, _) = restarted
            .admin(Method::GET, &format!("/v1/contacts/{contact}"), None)
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged contact {contact} survived SIGKILL"
        );
    }
    let n_events = restarted.n_events().await;
    assert!(
        n_events > acknowledged.len() as u64,
        "every acknowledged create is in the log"
    );
    let (_, before) = restarted.admin(Method::GET, "/v1/reports/owners", None).await;
    let (status, _) = restarted.admin(Method::POST, "/v1/admin/rebuild", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, after) = restarted.admin(Method::GET, "/v1/reports/owners", None).await;
    assert_eq!(
        before["unowned"], after["unowned"],
        "the read models agree with a rebuild"
    );
    let n_contacts = after["unowned"]["records"].as_u64().expect("a count");
    assert!(
        n_contacts >= acknowledged.len() as u64,
        "{n_contacts} contacts after the rebuild"
    );
}

/// The auditor's two questions about a moment: what had happened by then
/// (`as_of`, business time: a backfill recorded later counts) and what the
/// system showed then (`as_recorded`: only what was recorded by then).
async fn as_recorded_shows_what_the_system_held_then_and_as_of_what_had_happened(server: &Server) {
    create_contact(server, "Recorded before").await;
    let then = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let imported = server
        .import_csv("contacts", "name,created_at\nBackfilled,2026-01-10T09:00:00Z\n".into())
        .await;
    assert_eq!(imported["created"], 1, "{imported}");
    let records = |report: &Value| report["summary"]["records"].clone();
    let ask = |query: String| async move {
        let (status, report) = server
            .admin(Method::GET, &format!("/v1/reports/data-quality?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {report}");
        report
    };
    let happened = ask(format!("as_of={then}")).await;
    assert_eq!(
        records(&happened),
        json!(2),
        "the backfill had happened by then: {happened}"
    );
    assert!(happened.get("as_recorded").is_none(), "{happened}");
    let shown = ask(format!("as_recorded={then}")).await;
    assert_eq!(records(&shown), json!(1), "it was recorded after: {shown}");
    assert_eq!(
        shown["as_recorded"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        chrono::DateTime::parse_from_rfc3339(&then).ok(),
        "the answer says which question it answers: {shown}"
    );
    let (_, pipeline) = server
        .admin(Method::GET, &format!("/v1/reports/pipeline?as_recorded={then}"), None)
        .await;
    assert!(pipeline["totals"].is_object(), "every report takes it: {pipeline}");
    // Asked again, after more is recorded: the same answer.
    create_contact(server, "Recorded after").await;
    assert_eq!(records(&ask(format!("as_recorded={then}")).await), json!(1));
    assert_eq!(
        records(&ask("as_recorded=2020-01-01".into()).await),
        json!(0),
        "a date: its end"
    );
    let (status, problem) = server
        .admin(
            Method::GET,
            &format!("/v1/reports/data-quality?as_of={then}&as_recorded={then}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("give one")),
        "{problem}"
    );
}

async fn a_trend_gives_each_dates_figures_as_its_report_as_of_then_does(server: &Server) {
    // Three contacts created in three months of an old system, one deal.
    let imported = server
        .import_csv(
            "contacts",
            "name,created_at\nJan,2026-01-10T09:00:00Z\nFeb,2026-02-10T09:00:00Z\nMar,2026-03-10T09:00:00Z\n".into(),
        )
        .await;
    assert_eq!(imported["created"], 3, "{imported}");
    let path = "/v1/reports/data-quality/trend?from=2026-01-01&to=2026-03-31&every=month&stale_days=20";
    let (status, trend) = server.admin(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{trend}");
    let points = trend["points"].as_array().cloned().unwrap_or_default();
    let dates: Vec<&str> = points.iter().filter_map(|p| p["as_of"].as_str()).collect();
    assert_eq!(
        dates,
        [
            "2026-01-31T23:59:59.999999Z",
            "2026-02-28T23:59:59.999999Z",
            "2026-03-31T23:59:59.999999Z"
        ]
    );
    let records: Vec<u64> = points.iter().filter_map(|p| p["summary"]["records"].as_u64()).collect();
    assert_eq!(records, [1, 2, 3], "{trend}");
    for point in &points {
        let as_of = point["as_of"].as_str().unwrap_or_default();
        let path = format!("/v1/reports/data-quality?as_of={as_of}&stale_days=20");
        let (_, report) = server.admin(Method::GET, &path, None).await;
        assert_eq!(point["summary"], report["summary"], "as of {as_of}");
        assert!(
            point.get("stale").is_none(),
            "a point holds figures, not entries: {point}"
        );
    }
    // Weeks, and the pipeline with its period counts.
    let (status, weekly) = server
        .admin(
            Method::GET,
            "/v1/reports/pipeline/trend?from=2026-03-02&to=2026-03-15&every=week",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{weekly}");
    assert_eq!(weekly["points"].as_array().map(Vec::len), Some(2), "{weekly}");
    assert!(weekly["points"][0]["totals"].is_object(), "{weekly}");
    // As CSV: a row per date, a column per figure.
    let response = server
        .client
        .get(format!("{}{path}", server.base))
        .bearer_auth(&server.admin)
        .header("Accept", "text/csv")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/csv; charset=utf-8")
    );
    let csv = response.text().await.expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("as_of,") && lines[0].contains("summary.records"),
        "{csv}"
    );
    assert!(lines[3].starts_with("2026-03-31T23:59:59.999999Z,"), "{csv}");
    // Asked again, the kept answers stand while nothing recorded since had
    // happened by the last date; a contact imported with a February
    // creation date changes February and March.
    let (_, again) = server.admin(Method::GET, path, None).await;
    assert_eq!(again, trend);
    server.create("contacts", json!({"name": "Now"})).await;
    let (_, after_a_create) = server.admin(Method::GET, path, None).await;
    assert_eq!(after_a_create, trend, "a contact created today leaves the past alone");
    let imported = server
        .import_csv("contacts", "name,created_at\nLate,2026-02-15T09:00:00Z\n".into())
        .await;
    assert_eq!(imported["created"], 1, "{imported}");
    let (_, backfilled) = server.admin(Method::GET, path, None).await;
    let records: Vec<u64> = backfilled["points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["summary"]["records"].as_u64())
        .collect();
    assert_eq!(records, [1, 3, 4], "{backfilled}");
    // What cannot be answered is refused, naming why.
    for (path, needle) in [
        ("/v1/reports/owners/trend", "from"),
        ("/v1/reports/owners/trend?from=2026-01-01&every=quarter", "every"),
        ("/v1/reports/owners/trend?from=2000-01-01&every=day", "400"),
        ("/v1/reports/owners/trend?from=2026-01-01&limit=5", "limit"),
    ] {
        let (status, problem) = server.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains(needle)),
            "{path}: {problem}"
        );
    }
}

async fn the_openapi_document_lists_every_route(server: &Server) {
    let (status, _, document) = server.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = document["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/{kind}", "post"),
        ("/v1/{kind}", "get"),
        ("/v1/{kind}/{id}", "get"),
        ("/v1/{kind}/{id}", "patch"),
        ("/v1/{kind}/{id}", "delete"),
        ("/v1/deals/{id}/stage", "post"),
        ("/v1/deals/{id}/close", "post"),
        ("/v1/interactions", "post"),
        ("/v1/{kind}/{id}/history", "get"),
        ("/v1/{kind}/{id}/timeline", "get"),
        ("/v1/audit", "get"),
        ("/v1/events", "get"),
        ("/v1/events/stream", "get"),
        ("/v1/reports/pipeline", "get"),
        ("/v1/reports/data-quality", "get"),
        ("/v1/reports/data-quality/{list}", "get"),
        ("/v1/reports/neglected-accounts", "get"),
        ("/v1/reports/owners", "get"),
        ("/v1/reports/pipeline/trend", "get"),
        ("/v1/reports/data-quality/trend", "get"),
        ("/v1/reports/neglected-accounts/trend", "get"),
        ("/v1/reports/owners/trend", "get"),
        ("/v1/admin/rebuild", "post"),
        ("/v1/admin/verify", "get"),
        ("/v1/users", "post"),
        ("/v1/import/{kind}", "post"),
        ("/v1/export/{file}", "get"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{id}", "get"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/resume", "post"),
        ("/v1/webhooks/{id}/deliveries", "get"),
        ("/healthz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is missing from the OpenAPI document"
        );
    }
    // The bodies typed so far are described by the types the handlers
    // serialise: real answers conform to their schemas.
    let import = server
        .import_csv("contacts", "name,email\nTyped,typed@example.com\nUntyped,nope\n".into())
        .await;
    conforms(&document, "ImportReport", &import);
    conforms(&document, "LineError", &import["errors"][0]);
    let (status, made) = server
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": "https://hooks.example.com/hook"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    conforms(&document, "CreatedSubscription", &made);
    let (_, listed) = server.admin(Method::GET, "/v1/webhooks", None).await;
    conforms(&document, "SubscriptionList", &listed);
    conforms(&document, "Subscription", &listed["items"][0]);
    let path = format!("/v1/webhooks/{}/deliveries", id(&made));
    let (_, deliveries) = server.admin(Method::GET, &path, None).await;
    conforms(&document, "DeliveryPage", &deliveries);
    let (status, _) = server
        .admin(Method::DELETE, &format!("/v1/webhooks/{}", id(&made)), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// The properties a schema of the document names, with their JSON types
/// (`allOf` parts merged, `$ref`s followed), and those it requires.
fn schema_properties(document: &Value, schema: &Value) -> (serde_json::Map<String, Value>, Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return schema_properties(document, &document["components"]["schemas"][name]);
    }
    let mut properties = schema["properties"].as_object().cloned().unwrap_or_default();
    let mut required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (more, needed) = schema_properties(document, part);
        properties.extend(more);
        required.extend(needed);
    }
    (properties, required)
}

/// Asserts that `value` has every property `name` requires, no property it
/// does not name, and each of the JSON type the schema gives.
fn conforms(document: &Value, name: &str, value: &Value) {
    let schema = &document["components"]["schemas"][name];
    assert!(schema.is_object(), "{name} is not among the document's schemas");
    let (properties, required) = schema_properties(document, schema);
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{name}: not an object: {value}"));
    for field in &required {
        assert!(object.contains_key(field), "{name}: {field} is required: {value}");
    }
    for (field, item) in object {
        let property = properties
            .get(field)
            .unwrap_or_else(|| panic!("{name}: {field} is not in the schema: {value}"));
        let property = match property["$ref"].as_str() {
            Some(_) => continue,
            None => property,
        };
        let types: Vec<&str> = match &property["type"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        let actual = match item {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert!(
            types.contains(&actual) || (actual == "integer" && types.contains(&"number")),
            "{name}: {field} is {actual}, the schema says {types:?}: {value}"
        );
    }
}

/// What the webhook receiver does with its next request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Fail,
    /// 410 Gone: the receiver is done with the hook.
    Gone,
    /// Answers after this long (longer than the server waits).
    Hang(Duration),
    Ok,
}

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    delivery_id: u64,
    position: u64,
    attempt: u32,
    stream_id: String,
    signed: bool,
    answered_ok: bool,
}

#[derive(Debug, Default)]
struct ReceiverState {
    /// Answers for the next requests, in turn; then `otherwise`.
    script: std::collections::VecDeque<Answer>,
    otherwise: Option<Answer>,
    received: Vec<Received>,
}

/// A webhook receiver on loopback that fails, hangs and recovers as told,
/// checking every delivery's signature.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: std::sync::Arc<std::sync::Mutex<ReceiverState>>,
}

const WEBHOOK_SECRET: &str = "a-receivers-secret-of-some-length";

impl Receiver {
    async fn start() -> Self {
        let state = std::sync::Arc::new(std::sync::Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = shared.clone();
                async move {
                    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let timestamp: i64 = header("crm-timestamp").parse().unwrap_or(0);
                    let signed = header("crm-signature")
                        == format!("v1={}", server::webhooks::sign(WEBHOOK_SECRET, timestamp, &body));
                    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let answer = {
                        let mut state = state.lock().expect("the receiver's lock");
                        let answer = state.script.pop_front().or(state.otherwise).unwrap_or(Answer::Ok);
                        state.received.push(Received {
                            delivery_id: header("crm-delivery-id").parse().unwrap_or(0),
                            position: event["position"].as_u64().unwrap_or(0),
                            attempt: header("crm-attempt").parse().unwrap_or(0),
                            stream_id: event["stream_id"].as_str().unwrap_or("").to_owned(),
                            signed,
                            answered_ok: answer == Answer::Ok,
                        });
                        answer
                    };
                    match answer {
                        Answer::Ok => axum::http::StatusCode::NO_CONTENT,
                        Answer::Fail => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        Answer::Gone => axum::http::StatusCode::GONE,
                        Answer::Hang(time) => {
                            tokio::time::sleep(time).await;
                            axum::http::StatusCode::NO_CONTENT
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn answer(&self, script: &[Answer], otherwise: Answer) {
        let mut state = self.state.lock().expect("the receiver's lock");
        state.script = script.iter().copied().collect();
        state.otherwise = Some(otherwise);
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().expect("the receiver's lock").received.clone()
    }

    /// Waits until `done` holds of what was received (at most 20 s).
    async fn until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..400 {
            let received = self.received();
            if done(&received) {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver never got {what}: {:#?}", self.received());
    }
}

/// The positions of the contact events in the log.
async fn contact_positions(server: &Server) -> Vec<u64> {
    let (_, page) = server.admin(Method::GET, "/v1/events?limit=1000", None).await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["stream_id"].as_str().is_some_and(|s| s.starts_with("contact-")))
        .filter_map(|e| e["position"].as_u64())
        .collect()
}

async fn create_contact(server: &Server, name: &str) {
    let (status, body) = server
        .admin(Method::POST, "/v1/contacts", Some(json!({"name": name})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

const WEBHOOK_ARGS: [&str; 10] = [
    "--webhook-timeout-ms",
    "400",
    "--webhook-retry-min-ms",
    "50",
    "--webhook-retry-max-ms",
    "200",
    "--webhook-attempts-max",
    "4",
    "--webhook-lease-ms",
    "1500",
];

/// Webhooks: refused when malformed; then every wanted event delivered at
/// least once, in log order, signed, through failures, a hang and a
/// SIGKILL mid-delivery (the restarted server sends it again); unwanted
/// kinds never sent; a subscription that keeps failing disabled with its
/// position kept, and resumed from there.
async fn webhooks_deliver_every_wanted_event_through_failures_hangs_and_a_kill(database: TestDatabase) {
    let receiver = Receiver::start().await;
    let args: Vec<&str> = WEBHOOK_ARGS
        .iter()
        .copied()
        .chain(["--webhook-allow-networks", "127.0.0.1"])
        .collect();
    let mut server = Server::start_with_args(database, None, &args).await;
    let member = server.user("member").await;

    let good = json!({"url": receiver.url, "kinds": ["contact"], "secret": WEBHOOK_SECRET});
    let (status, _, _) = server
        .call(Method::POST, "/v1/webhooks", Some(&member), Some(good.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only an admin subscribes");
    for (bad, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": receiver.url, "event_types": ["ContactCreatd"]}),
            "event_types",
        ),
        (json!({"url": receiver.url, "kinds": ["widget"]}), "kinds"),
        (json!({"url": receiver.url, "secret": "short"}), "secret"),
        (json!({"url": receiver.url, "after": 1_000_000}), "after"),
        (json!({"url": receiver.url, "colour": "red"}), "colour"),
    ] {
        let (status, problem) = server.admin(Method::POST, "/v1/webhooks", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{bad}: {problem}");
    }
    let (_, listed) = server.admin(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(listed["items"], json!([]), "a refused subscription is not made");

    // Two failures and a hang, then the receiver recovers.
    receiver.answer(
        &[Answer::Fail, Answer::Fail, Answer::Hang(Duration::from_secs(2))],
        Answer::Ok,
    );
    let (status, made) = server.admin(Method::POST, "/v1/webhooks", Some(good)).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["secret"], WEBHOOK_SECRET, "the secret is shown when made");
    let id = made["id"].as_str().expect("an id").to_owned();
    for name in ["Ada", "Grace", "Edsger"] {
        create_contact(&server, name).await;
    }
    let (status, _) = server
        .admin(Method::POST, "/v1/accounts", Some(json!({"name": "Not wanted Ltd"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let wanted = contact_positions(&server).await;
    assert_eq!(wanted.len(), 3);
    receiver
        .until("the three contacts", |got| {
            wanted
                .iter()
                .all(|p| got.iter().any(|r| r.answered_ok && r.position == *p))
        })
        .await;
    let first = receiver.received();
    assert_eq!(
        first
            .iter()
            .take(4)
            .map(|r| (r.position, r.attempt))
            .collect::<Vec<_>>(),
        (1..=4).map(|attempt| (wanted[0], attempt)).collect::<Vec<_>>(),
        "the first event is tried again until it is taken, numbering its attempts"
    );
    let (_, log) = server
        .admin(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
        .await;
    let oldest_first: Vec<&Value> = log["items"].as_array().expect("items").iter().rev().collect();
    assert_eq!(oldest_first[0]["status"], 500, "{log}");
    assert_eq!(oldest_first[1]["status"], 500, "{log}");
    assert!(
        oldest_first[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within")),
        "{log}"
    );
    assert_eq!(oldest_first[3]["ok"], true, "{log}");

    // Killed while the receiver holds a delivery: the restarted server
    // sends that event again and goes on.
    receiver.answer(&[Answer::Hang(Duration::from_secs(30))], Answer::Ok);
    create_contact(&server, "Barbara").await;
    let held = *contact_positions(&server).await.last().expect("a contact event");
    receiver
        .until("the delivery to hold", |got| got.iter().any(|r| r.position == held))
        .await;
    let admin = server.admin.clone();
    let database = server.kill();
    server = Server::start_with_args(database, Some(admin), &args).await;
    create_contact(&server, "Donald").await;
    let wanted = contact_positions(&server).await;
    let received = receiver
        .until("every contact after the restart", |got| {
            wanted
                .iter()
                .all(|p| got.iter().any(|r| r.answered_ok && r.position == *p))
        })
        .await;
    assert!(
        received.iter().all(|r| r.signed),
        "every delivery is signed with the secret"
    );
    assert!(
        received.iter().all(|r| r.delivery_id == r.position),
        "the delivery id is the position"
    );
    assert!(
        received.iter().all(|r| r.stream_id.starts_with("contact-")),
        "only the kinds subscribed to are sent"
    );
    assert!(
        received.iter().filter(|r| r.position == held).count() >= 2,
        "the held event is sent again"
    );
    let mut delivered: Vec<u64> = received.iter().filter(|r| r.answered_ok).map(|r| r.position).collect();
    delivered.dedup();
    assert_eq!(delivered, wanted, "each event delivered in log order, none skipped");

    // A receiver that keeps failing: the subscription is disabled where it
    // stands, and resumed from there.
    receiver.answer(&[], Answer::Fail);
    let before = *wanted.last().expect("a position");
    create_contact(&server, "Frances").await;
    let mut stopped = Value::Null;
    for _ in 0..200 {
        stopped = server.admin(Method::GET, &format!("/v1/webhooks/{id}"), None).await.1;
        if stopped["state"] == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stopped["state"], "disabled", "{stopped}");
    assert_eq!(stopped["attempts"], 4, "{stopped}");
    assert_eq!(stopped["position"], before, "the position is kept: {stopped}");
    let tries = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.received().len(),
        tries,
        "a disabled subscription sends nothing"
    );
    receiver.answer(&[], Answer::Ok);
    let (status, resumed) = server
        .admin(Method::POST, &format!("/v1/webhooks/{id}/resume"), None)
        .await;
    assert_eq!(
        (status, &resumed["state"]),
        (StatusCode::OK, &json!("active")),
        "{resumed}"
    );
    let last = *contact_positions(&server).await.last().expect("a position");
    receiver
        .until("the event after resuming", |got| {
            got.iter().any(|r| r.answered_ok && r.position == last)
        })
        .await;

    // 410 Gone stops it at the first answer, without retries.
    receiver.answer(&[], Answer::Gone);
    let tries = receiver.received().len();
    create_contact(&server, "Grace").await;
    let mut gone = Value::Null;
    for _ in 0..200 {
        gone = server.admin(Method::GET, &format!("/v1/webhooks/{id}"), None).await.1;
        if gone["state"] == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (&gone["state"], &gone["attempts"]),
        (&json!("disabled"), &json!(1)),
        "{gone}"
    );
    assert_eq!(receiver.received().len(), tries + 1, "one attempt, no retry");

    let (status, _) = server.admin(Method::DELETE, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.admin(Method::GET, &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The newest delivery attempt of a subscription, once it has one.
async fn last_attempt(server: &Server, id: &str) -> Value {
    for _ in 0..200 {
        let (_, log) = server
            .admin(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
            .await;
        if let Some(newest) = log["items"].get(0) {
            return newest.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("subscription {id} made no attempt");
}

/// Webhooks reach private, loopback and link-local addresses only where
/// the server allows them: refused when subscribed (an address in the URL,
/// localhost), and at delivery, for an address and for a name as it
/// resolves, once the server no longer allows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_private_addresses_only_where_the_server_allows_them() {
    let receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let mut server = Server::start_with_args(TestDatabase::sqlite(), None, &WEBHOOK_ARGS).await;
    for url in [
        receiver.url.as_str(),
        by_name.as_str(),
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:10.0.0.1]/hook",
    ] {
        let (status, problem) = server
            .admin(Method::POST, "/v1/webhooks", Some(json!({"url": url})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("--webhook-allow-networks")),
            "{url}: {problem}"
        );
    }

    let allowing: Vec<&str> = WEBHOOK_ARGS
        .iter()
        .copied()
        .chain(["--webhook-allow-networks", "127.0.0.0/8,::1"])
        .collect();
    let admin = server.admin.clone();
    server = Server::start_with_args(server.kill(), Some(admin.clone()), &allowing).await;
    let mut ids = Vec::new();
    for url in [&receiver.url, &by_name] {
        let (status, made) = server
            .admin(
                Method::POST,
                "/v1/webhooks",
                Some(json!({"url": url, "kinds": ["contact"], "secret": WEBHOOK_SECRET})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {made}");
        ids.push(made["id"].as_str().expect("an id").to_owned());
    }
    create_contact(&server, "Ada").await;
    let first = *contact_positions(&server).await.last().expect("a contact event");
    receiver
        .until("the contact, by address and by name", |got| {
            got.iter().filter(|r| r.answered_ok && r.position == first).count() == 2
        })
        .await;

    // The same subscriptions on a server that no longer allows loopback.
    server = Server::start_with_args(server.kill(), Some(admin), &WEBHOOK_ARGS).await;
    let received = receiver.received().len();
    create_contact(&server, "Grace").await;
    for id in &ids {
        let attempt = last_attempt_after(&server, id, first).await;
        assert!(
            attempt["error"]
                .as_str()
                .is_some_and(|e| e.contains("not a public address")),
            "{attempt}"
        );
    }
    assert_eq!(receiver.received().len(), received, "nothing reached the receiver");
}

/// The newest delivery attempt of a subscription for an event after `after`.
async fn last_attempt_after(server: &Server, id: &str, after: u64) -> Value {
    for _ in 0..200 {
        let attempt = last_attempt(server, id).await;
        if attempt["position"].as_u64().is_some_and(|p| p > after) {
            return attempt;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("subscription {id} made no attempt after position {after}");
}

mod webhooks {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let database = eventstore::testing::TestDatabase::sqlite();
        super::webhooks_deliver_every_wanted_event_through_failures_hangs_and_a_kill(database).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(database) = eventstore::testing::TestDatabase::postgres().await else {
            return;
        };
        super::webhooks_deliver_every_wanted_event_through_failures_hangs_and_a_kill(database).await;
    }
}

/// The personal values of the contact the erasure test erases.
const ERASED_VALUES: [&str; 6] = [
    "Ada Lovelace",
    "Lovelace",
    "ada@analytical.example",
    "countess@lovelace.example",
    "447946001",
    "Babbage",
];

/// Every answer a user reads about the store, as one text to search.
async fn everything_served(server: &Server, contact: &str) -> String {
    let mut seen = String::new();
    for path in [
        format!("/v1/contacts/{contact}"),
        format!("/v1/contacts/{contact}/history"),
        format!("/v1/contacts/{contact}/timeline"),
        format!("/v1/contacts/{contact}/personal-data"),
        "/v1/contacts?q=lovelace".into(),
        "/v1/contacts?q=analytical".into(),
        "/v1/contacts".into(),
        "/v1/accounts".into(),
        "/v1/events?after=0&limit=1000".into(),
        "/v1/audit".into(),
        "/v1/reports/data-quality".into(),
        "/v1/reports/data-quality/stale".into(),
        "/v1/reports/neglected-accounts".into(),
        "/v1/reports/pipeline?as_of=2030-01-01T00:00:00Z".into(),
        "/v1/reports/data-quality?as_of=2030-01-01T00:00:00Z".into(),
    ] {
        let (status, body) = server.admin(Method::GET, &path, None).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        seen.push_str(&body.to_string());
    }
    for kind in ["contacts", "accounts", "deals"] {
        seen.push_str(&server.export_csv(kind).await);
    }
    seen
}

fn assert_absent(text: &str, what: &str) {
    for value in ERASED_VALUES {
        assert!(!text.contains(value), "{value:?} is still in {what}");
    }
}

async fn an_erased_contact_leaves_no_trace_of_its_personal_data_anywhere_and_the_log_verifies(server: &Server) {
    let database = server.database.as_ref().expect("a test database");
    let account = server
        .create(
            "accounts",
            json!({"name": "Analytical Engines", "domain": "analytical.example"}),
        )
        .await;
    let ada = server
        .create(
            "contacts",
            json!({"name": "Ada Lovelace", "email": "ada@analytical.example", "phone": "+44 20 7946 0018",
                   "title": "Countess", "account_id": id(&account), "lifecycle_stage": "customer",
                   "custom": {"friend": "Babbage"}}),
        )
        .await;
    let grace = server
        .create(
            "contacts",
            json!({"name": "Grace Hopper", "email": "grace@cobol.example"}),
        )
        .await;
    let path = format!("/v1/contacts/{}", id(&ada));
    let (status, _) = server
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"email": "countess@lovelace.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, call) = server
        .admin(
            Method::POST,
            "/v1/interactions",
            Some(json!({"kind": "call", "contact_id": id(&ada), "summary": "Ada Lovelace asked about Babbage"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{call}");
    server
        .create(
            "deals",
            json!({"title": "Difference engine", "account_id": id(&account), "amount": {"value_minor": 250000, "currency": "GBP"}}),
        )
        .await;

    // Access: everything held about her, with who changed what.
    let (status, document) = server.admin(Method::GET, &format!("{path}/personal-data"), None).await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["record"]["email"], "countess@lovelace.example");
    let text = document.to_string();
    for held in [
        "ada@analytical.example",
        "countess@lovelace.example",
        "Babbage",
        "asked about",
    ] {
        assert!(
            text.contains(held),
            "{held} missing from the access document: {document}"
        );
    }
    assert!(
        document["history"].as_array().is_some_and(|h| h.len() >= 2),
        "the creation and the change: {document}"
    );
    let (_, pipeline_before) = server.admin(Method::GET, "/v1/reports/pipeline", None).await;
    // At rest, her values are sealed in the log.
    let stored = database.stored_event_text().await.expect("raw events").join("\n");
    assert_absent(&stored, "the stored events");

    // The scans below do find her values while they are held.
    let held = database.tables_text("rm_").await.expect("read models");
    assert!(
        held.contains("countess@lovelace.example") && held.contains("asked about Babbage"),
        "{held}"
    );
    assert!(everything_served(server, &id(&ada)).await.contains("Ada Lovelace"));

    // Erasure: admins only, with a reason.
    let member = server.user("member").await;
    let refused = server
        .client
        .post(format!("{}{path}/erase", server.base))
        .bearer_auth(&member)
        .json(&json!({"reason": "Art. 17 request"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let (status, problem) = server
        .admin(Method::POST, &format!("{path}/erase"), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let before = server.n_events().await;
    let (status, erased) = server
        .admin(
            Method::POST,
            &format!("{path}/erase"),
            Some(json!({"reason": "Art. 17 request"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(erased["erased"]["reason"], "Art. 17 request", "{erased}");
    assert_eq!(erased["name"], "[erased]");
    assert_eq!(server.n_events().await, before + 1, "one ContactErased event");
    let (status, again) = server
        .admin(Method::POST, &format!("{path}/erase"), Some(json!({"reason": "twice"})))
        .await;
    assert_eq!(
        (status, server.n_events().await),
        (StatusCode::OK, before + 1),
        "{again}"
    );
    let (status, problem) = server.admin(Method::PATCH, &path, Some(json!({"name": "Ada"}))).await;
    assert_eq!(status, StatusCode::GONE, "{problem}");

    // Nowhere the product reads or serves, before and after a rebuild.
    for moment in ["after the erasure", "after a rebuild"] {
        assert_absent(
            &everything_served(server, &id(&ada)).await,
            &format!("the answers {moment}"),
        );
        assert_absent(
            &database.tables_text("rm_").await.expect("read models"),
            &format!("the read models {moment}"),
        );
        let (_, grace_now) = server
            .admin(Method::GET, &format!("/v1/contacts/{}", id(&grace)), None)
            .await;
        assert_eq!(grace_now["email"], "grace@cobol.example", "others keep theirs {moment}");
        let (_, pipeline) = server.admin(Method::GET, "/v1/reports/pipeline", None).await;
        assert_eq!(
            pipeline["totals"], pipeline_before["totals"],
            "non-personal figures stay {moment}"
        );
        let (status, verified) = server.admin(Method::GET, "/v1/admin/verify", None).await;
        assert_eq!(
            (status, verified["ok"].clone()),
            (StatusCode::OK, json!(true)),
            "{verified}"
        );
        let (status, _) = server.admin(Method::POST, "/v1/admin/rebuild", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, account_now) = server
        .admin(Method::GET, &format!("/v1/accounts/{}", id(&account)), None)
        .await;
    assert_eq!(
        account_now["interaction_count"], 1,
        "the call still counts: {account_now}"
    );

    // A store made before sealing holds its first events in plain text:
    // erasure there is refused, and says why.
    database
        .execute_raw("UPDATE store_format SET sealed_from = 3")
        .await
        .expect("play an older store");
    let before = server.n_events().await;
    let (status, problem) = server
        .admin(
            Method::POST,
            &format!("/v1/contacts/{}/erase", id(&grace)),
            Some(json!({"reason": "Art. 17 request"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("plain text")),
        "{problem}"
    );
    assert_eq!(server.n_events().await, before, "nothing appended");
}

/// The personal values of the user the user-erasure test erases.
const ERASED_USER_VALUES: [&str; 3] = ["Ursula Franklin", "Franklin", "ursula@crm.example"];

async fn an_erased_user_leaves_no_trace_acts_no_more_and_their_work_still_counts(server: &Server) {
    let database = server.database.as_ref().expect("a test database");
    let (status, ursula) = server
        .admin(
            Method::POST,
            "/v1/users",
            Some(json!({"name": "Ursula Franklin", "department": "Support", "role": "member", "email": "ursula@crm.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ursula}");
    let (user_id, token) = (id(&ursula), ursula["token"].as_str().expect("a token").to_owned());
    let account = server.create("accounts", json!({"name": "Looms Ltd"})).await;
    let (status, _, contact) = server
        .call(
            Method::POST,
            "/v1/contacts",
            Some(&token),
            Some(json!({"name": "Joseph Jacquard", "account_id": id(&account), "owner_id": user_id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{contact}");
    let (status, _, call) = server
        .call(
            Method::POST,
            "/v1/interactions",
            Some(&token),
            Some(json!({"kind": "call", "contact_id": id(&contact), "summary": "renewal"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{call}");
    let paths = [
        "/v1/users".to_owned(),
        "/v1/audit".to_owned(),
        format!("/v1/contacts/{}/history", id(&contact)),
        format!("/v1/contacts/{}/timeline", id(&contact)),
        format!("/v1/contacts/{}/personal-data", id(&contact)),
        "/v1/events?after=0&limit=1000".to_owned(),
        "/v1/reports/owners".to_owned(),
        "/v1/reports/data-quality".to_owned(),
        "/v1/reports/owners?as_of=2030-01-01T00:00:00Z".to_owned(),
    ];
    assert!(
        served_text(server, &paths).await.contains("ursula@crm.example"),
        "the scan finds her while held"
    );
    let stored = database.stored_event_text().await.expect("raw events").join("\n");
    for value in ERASED_USER_VALUES {
        assert!(!stored.contains(value), "{value:?} is sealed in the log");
    }
    let owned_before = owned_by(server, &user_id).await;
    assert_eq!(
        owned_before
            .as_ref()
            .map(|(department, contacts, _)| (department.clone(), contacts.clone())),
        Some((json!("Support"), json!(1))),
        "the owners report counts her contact"
    );

    // An admin cannot erase themselves; a member cannot erase anyone.
    let (_, users) = server.admin(Method::GET, "/v1/users", None).await;
    let me = users["items"]
        .as_array()
        .and_then(|all| all.iter().find(|u| u["role"] == "admin"))
        .map(id)
        .expect("the first admin is listed");
    let before = server.n_events().await;
    let (status, problem) = server
        .admin(
            Method::POST,
            &format!("/v1/users/{me}/erase"),
            Some(json!({"reason": "leaving"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, _, _) = server
        .call(
            Method::POST,
            &format!("/v1/users/{me}/erase"),
            Some(&token),
            Some(json!({"reason": "leaving"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, problem) = server
        .admin(
            Method::POST,
            &format!("/v1/users/{}/erase", uuid_like_nobody()),
            Some(json!({"reason": "Art. 17 request"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(server.n_events().await, before, "refusals append nothing");

    let (status, erased) = server
        .admin(
            Method::POST,
            &format!("/v1/users/{user_id}/erase"),
            Some(json!({"reason": "Art. 17 request"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(
        (
            &erased["name"],
            &erased["email"],
            &erased["department"],
            &erased["erased"]["reason"]
        ),
        (
            &json!("[erased]"),
            &Value::Null,
            &json!("Support"),
            &json!("Art. 17 request")
        ),
        "{erased}"
    );
    assert_eq!(server.n_events().await, before + 1, "one UserErased event");
    let (status, _) = server
        .admin(
            Method::POST,
            &format!("/v1/users/{user_id}/erase"),
            Some(json!({"reason": "twice"})),
        )
        .await;
    assert_eq!((status, server.n_events().await), (StatusCode::OK, before + 1));

    // She acts no more, and nothing new can be given to her.
    let (status, _, _) = server.call(Method::GET, "/v1/contacts", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "her token is revoked");
    let (status, problem) = server
        .admin(
            Method::POST,
            "/v1/contacts",
            Some(json!({"name": "Marie Jacquard", "owner_id": user_id})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    for moment in ["after the erasure", "after a rebuild"] {
        let seen = served_text(server, &paths).await;
        let tables = database.tables_text("rm_").await.expect("read models");
        for value in ERASED_USER_VALUES {
            assert!(!seen.contains(value), "{value:?} is still served {moment}");
            assert!(
                !tables.contains(value),
                "{value:?} is still in the read models {moment}"
            );
        }
        assert_eq!(
            owned_by(server, &user_id).await,
            owned_before,
            "what she owned still counts for Support {moment}"
        );
        let (_, contact_now) = server
            .admin(Method::GET, &format!("/v1/contacts/{}", id(&contact)), None)
            .await;
        assert_eq!(
            contact_now["owner_id"],
            json!(user_id),
            "the records she owned stay hers {moment}"
        );
        let (status, _) = server.admin(Method::POST, "/v1/admin/rebuild", None).await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// A user's line in the owners report: (department, contacts, records owned).
async fn owned_by(server: &Server, user_id: &str) -> Option<(Value, Value, Value)> {
    let (_, report) = server.admin(Method::GET, "/v1/reports/owners", None).await;
    let line = report["owners"]
        .as_array()
        .and_then(|lines| lines.iter().find(|line| line["owner"]["id"] == json!(user_id)).cloned())?;
    Some((
        line["owner"]["department"].clone(),
        line["contacts"].clone(),
        line["records_owned"].clone(),
    ))
}

/// The answers to `paths`, as one text to search.
async fn served_text(server: &Server, paths: &[String]) -> String {
    let mut seen = String::new();
    for path in paths {
        let (status, body) = server.admin(Method::GET, path, None).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        seen.push_str(&body.to_string());
    }
    seen
}

/// An id no record has.
fn uuid_like_nobody() -> &'static str {
    "00000000-0000-7000-8000-000000000000"
}
