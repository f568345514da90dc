//! The `crm` command line, black-box: exit codes, JSON output, verify
//! catching tampering, and a reproducible demo.

use std::process::{Command, Output};

use eventstore::testing::TestDatabase;
use serde_json::{Value, json};

fn crm(database: &TestDatabase, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crm-blackbox"));
    command
        .args(["--database", &database.url])
        .args(args)
        .env_remove("CRM_DATABASE_URL");
    if let Some(schema) = &database.options.schema {
        command.args(["--schema", schema]);
    }
    command.output().expect("crm runs")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn exit_codes_say_ok_refused_or_usage() {
    let database = TestDatabase::sqlite();
    let created = crm(&database, &["create", "account", r#"{"name": "Acme"}"#, "--json"]);
    assert_eq!(created.status.code(), Some(0));
    assert_eq!(json(&created)["version"], 1);

    let refused = crm(&database, &["create", "contact", r#"{"name": " ", "email": "nope"}"#]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("name") && message.contains("email"),
        "every bad field is named: {message}"
    );

    let not_json = crm(&database, &["create", "contact", "{name"]);
    assert_eq!(not_json.status.code(), Some(1));
    assert_eq!(
        crm(&database, &["frobnicate"]).status.code(),
        Some(2),
        "unknown subcommand is a usage error"
    );
    assert_eq!(
        crm(&database, &["report", "pipeline", "--as-of", "yesterday"])
            .status
            .code(),
        Some(2)
    );

    let events = json(&crm(&database, &["events", "--json"]));
    assert_eq!(
        events["items"].as_array().map(Vec::len),
        Some(1),
        "refused commands appended nothing"
    );
    for report in ["pipeline", "data-quality", "neglected-accounts", "owners"] {
        let output = crm(&database, &["report", report, "--json"]);
        assert_eq!(output.status.code(), Some(0), "{report}");
        assert!(json(&output)["as_of"].is_string(), "{report}");
    }
}

#[test]
fn verify_fails_with_exit_1_and_names_the_altered_position() {
    let database = TestDatabase::sqlite();
    for name in ["Acme", "Initech", "Globex"] {
        assert!(
            crm(&database, &["create", "account", &format!(r#"{{"name": "{name}"}}"#)])
                .status
                .success()
        );
    }
    let intact = crm(&database, &["verify", "--json"]);
    assert_eq!(
        (intact.status.code(), json(&intact)["events"].clone()),
        (Some(0), Value::from(3))
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(database.execute_raw(&database.tamper_sql(2, r#"{"account_id":"x"}"#)))
        .expect("tamper");
    let broken = crm(&database, &["verify"]);
    assert_eq!(broken.status.code(), Some(1));
    let message = String::from_utf8_lossy(&broken.stderr);
    assert!(message.contains("position 2"), "{message}");
    // With --json, the object GET /v1/admin/verify answers, and still exit 1.
    let broken = crm(&database, &["verify", "--json"]);
    assert_eq!(broken.status.code(), Some(1));
    let report = json(&broken);
    assert_eq!(
        (&report["ok"], &report["first_bad_position"], &report["events"]),
        (&json!(false), &json!(2), &json!(1)),
        "{report}"
    );
    assert!(report.get("head_hash").is_some(), "{report}");
}

#[test]
fn the_demo_is_reproducible_from_its_seed() {
    let runs: Vec<Vec<Value>> = (0..2)
        .map(|_| {
            let database = TestDatabase::sqlite();
            let demo = crm(
                &database,
                &[
                    "demo",
                    "--contacts",
                    "60",
                    "--seed",
                    "7",
                    "--until",
                    "2026-01-01",
                    "--json",
                ],
            );
            assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
            assert!(json(&demo)["events"].as_u64() > Some(100));
            let events = json(&crm(&database, &["events", "--limit", "10000", "--json"]));
            // recorded_at (and so the hash) is the time of writing; the rest is the history.
            events["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| {
                    serde_json::json!([
                        e["position"],
                        e["stream_id"],
                        e["type"],
                        e["data"],
                        e["actor"],
                        e["occurred_at"]
                    ])
                })
                .collect()
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    let other_seed = {
        let database = TestDatabase::sqlite();
        crm(
            &database,
            &["demo", "--contacts", "60", "--seed", "8", "--until", "2026-01-01"],
        );
        json(&crm(&database, &["events", "--limit", "10000", "--json"]))["items"].clone()
    };
    assert_ne!(other_seed.as_array().map(Vec::len), None);
    assert_ne!(other_seed[20]["data"], runs[0][20][3], "another seed, another history");
}

/// The demo's people differ, so each report singles someone out: the
/// owners' stale shares spread, some deals rot but not most, and Support's
/// coverage is not everyone's.
#[test]
fn the_demo_gives_every_report_something_to_act_on() {
    let database = TestDatabase::sqlite();
    let until = "2026-06-01";
    let demo = crm(
        &database,
        &["demo", "--contacts", "1000", "--seed", "5", "--until", until],
    );
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let report = |args: &[&str]| {
        let mut all = vec!["report"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--as-of", until, "--json"]);
        let output = crm(&database, &all);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        json(&output)
    };
    let owners = report(&["owners"]);
    let shares: Vec<f64> = owners["owners"]
        .as_array()
        .expect("owners")
        .iter()
        .filter_map(|o| o["stale_share"].as_f64())
        .collect();
    let (low, high) = shares
        .iter()
        .fold((f64::MAX, f64::MIN), |(low, high), s| (low.min(*s), high.max(*s)));
    assert!(shares.len() >= 5 && high - low > 0.3, "stale shares spread: {shares:?}");
    let pipeline = report(&["pipeline"]);
    let (rotting, open) = (
        pipeline["rotting_deals_total"].as_u64().expect("rotting"),
        pipeline["totals"]["count"].as_u64().expect("open"),
    );
    assert!(
        rotting > 0 && rotting * 2 < open,
        "some deals rot, not most: {rotting} of {open}"
    );
    let neglected = report(&["neglected-accounts", "--days", "90", "--limit", "1000"]);
    let by_support = report(&[
        "neglected-accounts",
        "--days",
        "90",
        "--not-touched-by",
        "Support",
        "--limit",
        "1000",
    ]);
    let total = |r: &Value| r["total"].as_u64().expect("total");
    assert!(
        total(&by_support) > total(&neglected) && total(&neglected) > 0,
        "Support neglects more accounts than everyone together: {} and {}",
        total(&by_support),
        total(&neglected)
    );
    let departments = |account: &Value| account["departments"].as_array().map_or(0, Vec::len);
    let accounts = by_support["accounts"].as_array().expect("accounts");
    assert!(
        accounts.iter().any(|a| departments(a) < 4) && accounts.iter().any(|a| departments(a) >= 3),
        "the departments' coverage differs per account"
    );
}

/// A rebuild holding only a few records at a time writes them back and
/// reloads them many times over: the reports it leaves are those of the
/// demo's rebuild, which held every record at once.
#[test]
fn a_rebuild_with_few_rows_in_memory_leaves_the_same_reports() {
    let database = TestDatabase::sqlite();
    let demo = crm(
        &database,
        &["demo", "--contacts", "80", "--seed", "3", "--until", "2026-06-01"],
    );
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let reports = || -> Vec<Value> {
        ["data-quality", "neglected-accounts", "owners", "pipeline"]
            .iter()
            .map(|report| {
                let output = crm(&database, &["report", report, "--limit", "1000", "--json"]);
                assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
                without_clock(json(&output))
            })
            .collect()
    };
    let before = reports();
    assert!(
        before[0]["stale"].as_array().is_some_and(|stale| stale.len() > 10),
        "the demo has stale records to list: {}",
        before[0]
    );
    // 3: records written back and reloaded all the time; 200: more than the
    // demo's records, fewer than its interactions, which are written apart.
    for rows in ["3", "200"] {
        let rebuilt = crm(&database, &["rebuild", "--rows-in-memory", rows, "--json"]);
        assert!(rebuilt.status.success(), "{}", String::from_utf8_lossy(&rebuilt.stderr));
        assert!(json(&rebuilt)["events"].as_u64() > Some(300));
        assert_eq!(reports(), before, "rebuilt holding {rows} records");
    }
}

/// A report without what depends on the moment it was asked (its `as_of`
/// and the days counted up to then), which two asks a moment apart may not share.
fn without_clock(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(key, _)| key != "as_of" && !key.starts_with("days"))
                .map(|(key, value)| (key, without_clock(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_clock).collect()),
        other => other,
    }
}

/// `crm bench --reads` answers every read-side question of a store, appends
/// nothing, and counts the store's records as the demo made them.
#[test]
fn bench_reads_measures_every_question_of_a_store_and_appends_nothing() {
    let database = TestDatabase::sqlite();
    let demo = crm(&database, &["demo", "--contacts", "300", "--until", "2026-11-22"]);
    assert_eq!(demo.status.code(), Some(0), "{}", String::from_utf8_lossy(&demo.stderr));
    let events_before = json(&crm(&database, &["verify", "--json"]))["events"].clone();
    let measured = crm(&database, &["--json", "bench", "--reads", "--repeat", "2"]);
    assert_eq!(
        measured.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&measured.stderr)
    );
    let bench = json(&measured);
    assert_eq!(bench["contacts"], 300, "{bench}");
    let figures = bench["figures"].as_array().expect("figures");
    let names: Vec<&str> = figures.iter().filter_map(|f| f["name"].as_str()).collect();
    for question in [
        "contact by id",
        "search, no match",
        "pipeline",
        "data quality, stale page",
        "neglected accounts",
        "data quality, one owner",
        "pipeline as of a year ago",
    ] {
        assert!(names.contains(&question), "{question} is measured: {names:?}");
    }
    for figure in figures.iter().filter(|f| f["name"] != "search, no match") {
        assert!(
            figure["answer_bytes"].as_u64() > Some(2),
            "an answer with something in it: {figure}"
        );
        assert!(
            figure["median_millis"].as_f64() <= figure["max_millis"].as_f64(),
            "{figure}"
        );
    }
    let events_after = json(&crm(&database, &["verify", "--json"]))["events"].clone();
    assert_eq!(events_before, events_after, "measuring appends nothing");
}

/// `crm show` prints a record for people (the account by name, money with
/// its currency); with `--json` it prints the view the HTTP API answers.
#[test]
fn show_prints_a_record_for_people_and_the_http_view_as_json() {
    let database = TestDatabase::sqlite();
    let account = json(&crm(&database, &["create", "account", r#"{"name": "Acme"}"#, "--json"]));
    let account_id = account["id"].as_str().expect("an id").to_owned();
    let fields = format!(
        r#"{{"title": "Fleet", "account_id": "{account_id}", "amount": {{"value_minor": 1234567, "currency": "EUR"}}}}"#
    );
    let deal = json(&crm(&database, &["create", "deal", &fields, "--json"]));
    let deal_id = deal["id"].as_str().expect("an id").to_owned();
    let shown = crm(&database, &["show", "deal", &deal_id]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("Acme") && !text.contains(&account_id),
        "the account by name: {text}"
    );
    assert!(text.contains("12345.67 EUR"), "money with its currency: {text}");
    let as_json = json(&crm(&database, &["show", "deal", &deal_id, "--json"]));
    assert_eq!((&as_json["id"], &as_json["version"]), (&deal["id"], &deal["version"]));
    assert_eq!(
        as_json["account_id"],
        account_id.as_str(),
        "fields at the top, as over HTTP: {as_json}"
    );
    assert!(
        as_json["last_touched_at"].is_string() && as_json.get("fields").is_none(),
        "{as_json}"
    );
    assert_eq!(
        (&as_json["title"], &as_json["kind"]),
        (&serde_json::json!("Fleet"), &serde_json::json!("deal"))
    );
    let missing = crm(&database, &["show", "deal", &account_id]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no deal has the id"));
}

/// The example exports of `import-maps/samples` and their mapping files.
fn example(name: &str) -> String {
    format!("{}/../import-maps/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A migration from HubSpot and from Salesforce, three commands each, with
/// the shipped mapping files and exports in those systems' own columns:
/// references resolve by name, domain, email and the other system's ids;
/// what the old system knew (created, closed, last activity) is kept; a
/// second run changes nothing.
#[test]
fn hubspot_and_salesforce_exports_migrate_with_their_mapping_files() {
    let database = TestDatabase::sqlite();
    let mut users = Vec::new();
    for (name, email) in [("Jane Doe", "jane@example.com"), ("Raj Patel", "raj@example.com")] {
        let args = [
            "user",
            "add",
            "--name",
            name,
            "--department",
            "Sales",
            "--role",
            "member",
            "--email",
            email,
            "--json",
        ];
        let added = crm(&database, &args);
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        users.push(json(&added)["id"].as_str().expect("an id").to_owned());
    }
    let migration = [
        ("accounts", "hubspot-companies", 3, vec!["Number of Employees", "City"]),
        ("contacts", "hubspot-contacts", 3, vec!["Marketing emails opened"]),
        ("deals", "hubspot-deals", 3, vec!["Pipeline"]),
        ("accounts", "salesforce-accounts", 2, vec!["Billing City", "Type"]),
        (
            "contacts",
            "salesforce-contacts",
            2,
            vec!["Account Name", "Mailing City"],
        ),
        ("deals", "salesforce-opportunities", 2, vec!["Probability (%)", "Type"]),
    ];
    for round in ["first", "second"] {
        for (kind, name, rows, ignored) in &migration {
            let file = example(&format!("samples/{name}.csv"));
            let map = example(&format!("{name}.map"));
            let output = crm(&database, &["import", kind, &file, "--map-file", &map, "--json"]);
            assert!(
                output.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report = json(&output);
            let counted = if round == "first" { "created" } else { "unchanged" };
            assert_eq!(
                (&report[counted], &report["failed"]),
                (&json!(rows), &json!(0)),
                "{round} {name}: {report}"
            );
            assert_eq!(report["ignored_columns"], json!(ignored), "{name}: {report}");
        }
    }
    let records = |kind: &str| -> Vec<std::collections::HashMap<String, String>> {
        let output = crm(&database, &["export", kind]);
        assert!(output.status.success());
        // With --json, the same CSV as the one string of `{"csv": ...}`.
        let wrapped = json(&crm(&database, &["export", kind, "--json"]));
        assert_eq!(
            wrapped["csv"].as_str().map(str::as_bytes),
            Some(output.stdout.as_slice()),
            "{kind}"
        );
        let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
        reader.deserialize().map(|row| row.expect("a CSV row")).collect()
    };
    let find = |rows: &[std::collections::HashMap<String, String>], external_id: &str| {
        rows.iter()
            .find(|row| row["external_id"] == external_id)
            .cloned()
            .unwrap_or_else(|| panic!("{external_id} was imported"))
    };
    let accounts = records("accounts");
    let (contacts, deals) = (records("contacts"), records("deals"));
    let globex = find(&accounts, "9003");
    let hank = find(&contacts, "503");
    assert_eq!(hank["name"], "Hank Scorpio", "First Name + Last Name");
    assert_eq!(hank["account_id"], globex["id"], "the company by its domain");
    assert_eq!(hank["owner_id"], users[0], "the owner by email");
    assert_eq!(hank["lifecycle_stage"], "prospect", "HubSpot's stage translated");
    assert_eq!(find(&accounts, "001Hs00001AbCdE")["domain"], "umbrella.com");
    let pilot = find(&deals, "7002");
    assert_eq!(
        (
            pilot["status"].as_str(),
            pilot["amount_value_minor"].as_str(),
            pilot["owner_id"].as_str()
        ),
        ("won", "1250050", users[1].as_str()),
        "Closed Won closes the deal; 12500.50 USD in cents; the owner by name"
    );
    let stark = find(&deals, "006Hs00003FgHiJ");
    assert_eq!(
        (
            stark["created_at"].as_str(),
            stark["expected_close"].as_str(),
            stark["account_id"].as_str()
        ),
        (
            "2025-02-01T00:00:00Z",
            "2025-06-30",
            find(&accounts, "001Hs00001FgHiJ")["id"].as_str()
        ),
        "US dates read with the map's @date_format; the account by Salesforce's ID"
    );
    // As of a week after the exports, what the old systems knew of last
    // activity keeps Ada, Hank and Alice off the stale list.
    let quality = json(&crm(
        &database,
        &["report", "data-quality", "--as-of", "2025-12-01", "--json"],
    ));
    let mut stale: Vec<&str> = quality["stale"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|entry| entry["kind"] == "contact")
        .filter_map(|entry| entry["name"].as_str())
        .collect();
    stale.sort_unstable();
    assert_eq!(stale, ["Pepper Potts", "Peter Gibbons"], "{quality}");
}

/// A header that says nothing we know, or a file that is no CSV, is
/// refused before any row: the columns understood and not are named.
#[test]
fn an_import_whose_columns_are_not_understood_is_refused_and_writes_nothing() {
    let database = TestDatabase::sqlite();
    let directory = std::env::temp_dir().join(format!("crm-import-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&directory).expect("a directory");
    let file = directory.join("contacts.csv");
    std::fs::write(&file, "Name,E-mail\r\nAda,ada@example.com\r\n").expect("written");
    let file = file.to_string_lossy().into_owned();
    let refused = crm(&database, &["import", "contacts", &file]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("understood: Name -> name") && message.contains("not understood: E-mail"),
        "{message}"
    );
    let mapped = crm(
        &database,
        &["import", "contacts", &file, "--map", "E-mail=email", "--json"],
    );
    assert!(mapped.status.success(), "{}", String::from_utf8_lossy(&mapped.stderr));
    assert_eq!(json(&mapped)["created"], 1);
    let events = json(&crm(&database, &["events", "--json"]));
    assert_eq!(
        events["items"].as_array().map(Vec::len),
        Some(1),
        "only the mapped import wrote"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

/// `crm webhook` manages the subscriptions `/v1/webhooks` does, with the
/// same checks and the same JSON.
#[test]
fn webhooks_are_added_listed_resumed_and_removed_from_the_command_line() {
    let database = TestDatabase::sqlite();
    let refused = crm(
        &database,
        &["webhook", "add", "--url", "ftp://example.com", "--kind", "fax"],
    );
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("url:") && message.contains("kinds:"),
        "every bad field: {message}"
    );
    let args = [
        "webhook",
        "add",
        "--url",
        "https://hooks.example.com/crm",
        "--kind",
        "deal",
        "--event-type",
        "DealClosed",
        "--json",
    ];
    let added = crm(&database, &args);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let added = json(&added);
    assert!(
        added["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")),
        "{added}"
    );
    assert_eq!((&added["kinds"], &added["state"]), (&json!(["deal"]), &json!("active")));
    let id = added["id"].as_str().expect("an id").to_owned();
    let listed = json(&crm(&database, &["webhook", "list", "--json"]));
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(
        listed["items"][0].get("secret").is_none(),
        "the secret is shown once: {listed}"
    );
    assert!(crm(&database, &["webhook", "resume", &id]).status.success());
    let deliveries = json(&crm(&database, &["webhook", "deliveries", &id, "--json"]));
    assert_eq!(deliveries["items"], json!([]));
    assert!(crm(&database, &["webhook", "rm", &id]).status.success());
    assert_eq!(crm(&database, &["webhook", "rm", &id]).status.code(), Some(1), "gone");
    assert_eq!(
        json(&crm(&database, &["webhook", "list", "--json"]))["items"],
        json!([])
    );
}

/// `crm report ... --every` prints a trend: the report's figures at the end
/// of each period, as CSV (JSON with --json), each as the report as of then.
#[test]
fn a_report_with_every_prints_its_trend() {
    let database = TestDatabase::sqlite();
    let directory = std::env::temp_dir().join(format!("crm-trend-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&directory).expect("a directory");
    let file = directory.join("contacts.csv");
    std::fs::write(
        &file,
        "name,created_at\nJan,2026-01-10T09:00:00Z\nFeb,2026-02-10T09:00:00Z\nMar,2026-03-10T09:00:00Z\n",
    )
    .expect("written");
    let imported = crm(&database, &["import", "contacts", &file.to_string_lossy()]);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let args = [
        "report",
        "data-quality",
        "--every",
        "month",
        "--since",
        "2026-01-01",
        "--as-of",
        "2026-03-31",
    ];
    let printed = crm(&database, &args);
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let csv = String::from_utf8_lossy(&printed.stdout).into_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    let column = lines[0]
        .split(',')
        .position(|c| c == "summary.records")
        .expect("a records column");
    let records: Vec<&str> = lines[1..].iter().filter_map(|l| l.split(',').nth(column)).collect();
    assert_eq!(records, ["1", "2", "3"], "{csv}");
    let trend = json(&crm(&database, &[&args[..], &["--json"]].concat()));
    let as_of = trend["points"][1]["as_of"].as_str().expect("a date").to_owned();
    let report = json(&crm(
        &database,
        &["report", "data-quality", "--as-of", &as_of, "--json"],
    ));
    assert_eq!(trend["points"][1]["summary"], report["summary"]);
    let refused = crm(&database, &["report", "owners", "--every", "month"]);
    assert_eq!(refused.status.code(), Some(2), "--every needs --since");
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn a_contact_and_a_user_erased_from_the_command_line_are_gone_and_a_master_key_guards_the_keys() {
    let database = TestDatabase::sqlite();
    let key = "2a".repeat(32);
    let with_key = |args: &[&str]| {
        let mut all = vec!["--master-key", key.as_str()];
        all.extend_from_slice(args);
        crm(&database, &all)
    };
    let created = with_key(&[
        "create",
        "contact",
        r#"{"name": "Ada Lovelace", "email": "ada@analytical.example"}"#,
        "--json",
    ]);
    assert_eq!(
        created.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let id = json(&created)["id"].as_str().expect("an id").to_owned();
    let document = json(&with_key(&["personal-data", "contact", &id, "--json"]));
    assert_eq!(document["record"]["email"], "ada@analytical.example", "{document}");

    // Without the master key the store's keys do not open: a clear refusal.
    let without = crm(&database, &["personal-data", "contact", &id]);
    assert_ne!(without.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("CRM_MASTER_KEY"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );

    let no_reason = with_key(&["erase", "contact", &id]);
    assert_eq!(no_reason.status.code(), Some(2), "a reason is required");
    let no_reason = with_key(&["erase", "contact", &id, "--json"]);
    assert_eq!(no_reason.status.code(), Some(2));
    assert!(
        json(&no_reason)["error"]
            .as_str()
            .is_some_and(|e| e.contains("--reason")),
        "with --json a usage error is JSON too: {}",
        String::from_utf8_lossy(&no_reason.stdout)
    );
    let account = json(&with_key(&["create", "account", r#"{"name": "Acme"}"#, "--json"]));
    let not_a_person = with_key(&[
        "erase",
        "account",
        account["id"].as_str().unwrap_or_default(),
        "--reason",
        "x",
    ]);
    assert_eq!(not_a_person.status.code(), Some(1));
    let erased = with_key(&["erase", "contact", &id, "--reason", "Art. 17 request", "--json"]);
    assert_eq!(
        erased.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let document = with_key(&["personal-data", "contact", &id, "--json"]);
    let text = String::from_utf8_lossy(&document.stdout);
    assert!(!text.contains("Lovelace") && !text.contains("ada@"), "{text}");
    assert_eq!(json(&document)["erased"]["reason"], "Art. 17 request");
    let events = String::from_utf8_lossy(&with_key(&["events", "--json"]).stdout).into_owned();
    assert!(!events.contains("Lovelace"), "{events}");
    assert_eq!(with_key(&["verify"]).status.code(), Some(0));

    // A user is a data subject too: erased, it acts no more.
    let added = with_key(&[
        "user",
        "add",
        "--name",
        "Ursula Franklin",
        "--department",
        "Support",
        "--role",
        "member",
        "--json",
    ]);
    assert_eq!(
        added.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let user = json(&added)["id"].as_str().expect("a user id").to_owned();
    let erased = with_key(&["erase", "user", &user, "--reason", "left the company", "--json"]);
    assert_eq!(
        (erased.status.code(), json(&erased)["changed"].clone()),
        (Some(0), serde_json::json!(true)),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    let events = String::from_utf8_lossy(&with_key(&["events", "--json"]).stdout).into_owned();
    assert!(
        !events.contains("Franklin") && events.contains("UserErased"),
        "{events}"
    );
    let document = json(&with_key(&["personal-data", "user", &user, "--json"]));
    assert_eq!(
        (&document["record"]["name"], &document["erased"]["reason"]),
        (&serde_json::json!("[erased]"), &serde_json::json!("left the company")),
        "{document}"
    );
    let token = with_key(&["user", "token", &user]);
    assert_eq!(token.status.code(), Some(1), "an erased user gets no token");
    assert_eq!(with_key(&["verify"]).status.code(), Some(0));
}
