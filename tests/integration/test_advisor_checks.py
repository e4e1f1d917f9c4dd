"""Every advisor check, made to fire and kept quiet, against real PostgreSQL with the real Synapse schema.

Each case starts from a clean, well-configured pair of configs over a small homeserver (which
produces no ERROR and no WARN), changes one thing, and looks for that one check. The FIRES table
and the QUIET table must cover every check in advisor.CHECKS (see the coverage test at the end).
"""

from __future__ import annotations

import json
import uuid

import pytest

from _syn2mas import advisor
from _syn2mas.advisor import ERROR, INFO, WARN
from _syn2mas.config import format_ulid
from _syn2mas.migration.importer import ImportOptions, run_import
from tests.support import advisor_cases as cases
from tests.support import homeservers, mas_schema, migration_env, synapse_schema
from tests.support.advisor_cases import PEPPER, Case, clean_data, found, fresh
from tests.support.mas_stand_in import MasStandIn

FIRES = [
    ("synapse_config_invalid", ERROR, cases.missing_file),
    ("synapse_config_invalid", ERROR, cases.no_server_name),
    ("synapse_database_config", ERROR, cases.sqlite),
    ("synapse_database_config", ERROR, lambda c: c.synapse.update(database={
        "name": "psycopg2", "args": {"database": c.env.synapse_db, "dbname": c.env.synapse_db}})),
    ("synapse_database_config", ERROR, lambda c: c.synapse.update(database=None, databases={
        "state": {"name": "psycopg2", "data_stores": ["state"], "args": {"dbname": "x"}}})),
    ("registration_enabled", WARN, lambda c: c.synapse.update(enable_registration=True)),
    ("registration_captcha", WARN, lambda c: c.synapse.update(enable_registration_captcha=True)),
    ("user_consent", WARN, cases.consent),
    ("mas_tos_uri_missing", WARN, cases.consent),
    ("cas_enabled", WARN, lambda c: c.synapse.update(cas_config={"server_url": "https://cas.example.test/"})),
    ("saml2_enabled", WARN, lambda c: c.synapse.update(saml2_config={"sp_config": {"metadata": {}}})),
    ("jwt_enabled", WARN, lambda c: c.synapse.update(jwt_config={"enabled": True, "secret": "x", "algorithm": "HS256"})),
    ("password_localdb_disabled", WARN,
     lambda c: c.synapse.update(password_config={"pepper": PEPPER, "localdb_enabled": False})),
    ("password_providers", WARN, lambda c: c.synapse.update(
        password_providers=[{"module": "ldap_auth_provider.LdapAuthProvider", "config": {}}])),
    ("threepid_changes_enabled", ERROR, lambda c: c.synapse.update(enable_3pid_changes=True)),
    ("login_via_existing_session", ERROR, lambda c: c.synapse.update(login_via_existing_session={"enabled": True})),
    ("guest_access_enabled", ERROR, lambda c: c.synapse.update(allow_guest_access=True)),
    ("token_lifetimes_set", WARN, lambda c: c.synapse.update(refresh_token_lifetime="24h")),
    ("msc3861_present", ERROR, lambda c: c.synapse.update(
        experimental_features={"msc3861": {"enabled": True, "issuer": "https://auth.example.test/"}})),
    ("pepper_empty", INFO, lambda c: (c.synapse.update(password_config={"pepper": ""}), c.scheme(secret=None))),
    ("synapse_auth_delegated", INFO, cases.delegated_clean),
    ("synapse_mas_conflicts", ERROR, cases.delegated_with_registration),
    ("synapse_database_unreachable", ERROR, cases.synapse_uri("no_such_synapse_db")),
    ("synapse_tables_missing", ERROR, cases.synapse_uri("postgres")),
    ("synapse_running", INFO, cases.synapse_running(False)),
    ("synapse_running", ERROR, cases.synapse_running(True)),
    ("synapse_schema_too_old", ERROR, cases.schema_version),
    ("wrong_server_name_users", ERROR, cases.foreign_user),
    ("orphan_rows", WARN, cases.orphan_threepid),
    ("tokens_device_gone", WARN, cases.device_gone),
    ("appservice_users", WARN, cases.appservice),
    ("guest_users", WARN, cases.guest),
    ("non_email_threepids", WARN, cases.msisdn),
    ("oauth_delegated_links", ERROR, cases.oauth_delegated),
    ("sso_links_unknown_provider", ERROR, cases.cas_links),
    ("values_too_long", WARN, cases.long_email),
    ("users_without_email", INFO, cases.user_without_email),
    ("skipped_rows", INFO, cases.deactivated_with_device),
    ("invalid_ip_addresses", INFO, cases.bad_ip),
    ("migration_counts", INFO, cases.nothing),
    ("mas_config_invalid", ERROR, cases.missing_mas_file),
    ("provider_mapping_invalid", ERROR, lambda c: c.options.update(upstream_provider_mapping=["oidc-google"])),
    ("mas_homeserver_mismatch", ERROR, lambda c: c.mas_matrix(homeserver="matrix.example.test")),
    ("mas_public_base", ERROR, lambda c: c.mas.update(http={"listeners": []})),
    ("mas_public_base", WARN, lambda c: c.mas.update(http={"public_base": "http://[::]:8080/"})),
    ("mas_passwords_disabled", ERROR, lambda c: c.mas.update(passwords={"enabled": False})),
    ("mas_password_scheme_missing", ERROR,
     lambda c: c.mas.update(passwords={"schemes": [{"version": 2, "algorithm": "argon2id"}]})),
    ("mas_password_scheme_missing", ERROR, lambda c: c.mas.update(passwords=None)),
    ("mas_password_scheme_not_bcrypt", ERROR, lambda c: c.scheme(algorithm="argon2id")),
    ("mas_password_unicode_normalization", ERROR, lambda c: c.scheme(unicode_normalization=None)),
    ("mas_password_pepper_mismatch", ERROR, lambda c: c.scheme(secret="not-the-pepper")),
    ("mas_password_pepper_mismatch", ERROR, lambda c: c.scheme(secret=None)),
    ("mas_password_secret_file_newline", ERROR, cases.secret_file(PEPPER + "\n")),
    ("oidc_provider_not_in_mas", WARN, cases.unused_gitlab),
    ("sso_provider_unmapped", ERROR, cases.google_unmapped),
    ("mas_compat_resource", ERROR, cases.listeners("discovery", "human", "oauth", "graphql", "assets")),
    ("compat_routes_reach_mas", WARN, cases.nginx_site(with_routes=False)),
    ("mas_database_config", ERROR, cases.mas_uri_and_host),
    ("mas_database_unreachable", ERROR, cases.mas_missing_db),
    ("mas_running", INFO, cases.mas_running(False)),
    ("mas_running", ERROR, cases.mas_running(True)),
    ("mas_running", ERROR, cases.mas_import_running),
    ("mas_schema", ERROR, cases.mas_not_migrated),
    ("mas_schema", WARN, cases.mas_newer_schema),
    ("mas_not_empty", ERROR, cases.mas_user),
    ("mas_row_rewriters", ERROR, cases.mas_trigger),
    ("mas_already_imported", WARN, cases.mas_marker),
    ("sso_provider_not_in_mas_database", ERROR, cases.mas_providers_not_synced),
    ("mas_answers", ERROR, lambda c: c.mas_unreachable()),
    ("mas_answers", ERROR, lambda c: c.mas_answering(issuer="https://other-mas.example.test/")),
]

QUIET = [
    ("synapse_config_invalid", cases.nothing),
    ("synapse_database_config", cases.sqlite_with_uri),
    ("registration_enabled", lambda c: c.synapse.update(enable_registration="false")),
    ("registration_captcha", lambda c: c.synapse.update(enable_registration_captcha=False)),
    ("user_consent", lambda c: c.synapse.update(user_consent=None)),
    ("mas_tos_uri_missing", cases.consent_and_tos),
    ("cas_enabled", lambda c: c.synapse.update(cas_config={"enabled": False, "server_url": "https://cas.example.test/"})),
    ("cas_enabled", lambda c: c.synapse.update(cas_config=None)),
    ("saml2_enabled", lambda c: c.synapse.update(saml2_config={"enabled": False, "sp_config": {"metadata": {}}})),
    ("jwt_enabled", lambda c: c.synapse.update(jwt_config={"secret": "x", "algorithm": "HS256"})),
    ("password_localdb_disabled", lambda c: c.synapse.update(password_config={"pepper": PEPPER, "localdb_enabled": True})),
    ("password_providers", lambda c: c.synapse.update(
        modules=[{"module": "synapse_auto_accept_invite.InviteAutoAccepter", "config": {}}], password_providers=None)),
    ("threepid_changes_enabled", lambda c: c.synapse.update(enable_3pid_changes=False)),
    ("login_via_existing_session", lambda c: c.synapse.update(login_via_existing_session={"enabled": False})),
    ("guest_access_enabled", lambda c: c.synapse.update(allow_guest_access=False)),
    ("token_lifetimes_set", lambda c: c.synapse.update(refresh_token_lifetime=None)),
    ("msc3861_present", lambda c: c.synapse.update(experimental_features={"msc3861": {}, "msc4108_enabled": True})),
    ("pepper_empty", cases.nothing),
    ("synapse_auth_delegated", lambda c: c.synapse.update(matrix_authentication_service={"enabled": False})),
    ("synapse_mas_conflicts", cases.delegated_clean),
    ("synapse_database_unreachable", cases.nothing),
    ("synapse_tables_missing", cases.nothing),
    ("synapse_running", cases.nothing),
    ("synapse_schema_too_old", cases.nothing),
    ("wrong_server_name_users", cases.foreign_appservice_user),
    ("orphan_rows", cases.nothing),
    ("tokens_device_gone", cases.deviceless_token),
    ("appservice_users", cases.nothing),
    ("guest_users", cases.nothing),
    ("non_email_threepids", cases.nothing),
    ("oauth_delegated_links", cases.nothing),
    ("sso_links_unknown_provider", cases.cas_links_mapped),
    ("values_too_long", cases.nothing),
    ("users_without_email", cases.nothing),
    ("skipped_rows", cases.nothing),
    ("invalid_ip_addresses", cases.nothing),
    ("migration_counts", cases.synapse_uri("no_such_synapse_db")),
    ("mas_config_invalid", cases.nothing),
    ("provider_mapping_invalid", cases.google_mapped_explicitly),
    ("mas_homeserver_mismatch", cases.nothing),
    ("mas_public_base", cases.nothing),
    ("mas_passwords_disabled", fresh(lambda c: (cases.no_passwords(c), c.mas.update(passwords={"enabled": False})))),
    ("mas_password_scheme_missing", fresh(lambda c: (cases.no_passwords(c), c.mas.update(passwords=None)))),
    ("mas_password_scheme_not_bcrypt", cases.nothing),
    ("mas_password_unicode_normalization", cases.nothing),
    ("mas_password_pepper_mismatch", cases.secret_file(PEPPER)),
    ("mas_password_pepper_mismatch", lambda c: (c.synapse.update(password_config={"pepper": ""}),
                                                c.scheme(secret=None))),
    ("mas_password_secret_file_newline", cases.secret_file(PEPPER)),
    ("oidc_provider_not_in_mas", cases.unused_gitlab_in_mas),
    ("sso_provider_unmapped", cases.google_mapped_explicitly),
    ("mas_compat_resource", cases.listeners("discovery", "human", "oauth", "compat", "graphql", "assets")),
    ("compat_routes_reach_mas", cases.nginx_site(with_routes=True)),
    ("mas_database_config", cases.mas_uri_and_host_overridden),
    ("mas_database_unreachable", cases.nothing),
    ("mas_running", cases.nothing),
    ("mas_schema", cases.nothing),
    ("mas_not_empty", cases.nothing),
    ("mas_row_rewriters", cases.mas_trigger_disabled),
    ("mas_already_imported", cases.nothing),
    ("sso_provider_not_in_mas_database", cases.nothing),
    ("mas_answers", lambda c: c.mas_answering()),
    ("mas_answers", cases.nothing),  # no MAS URL given: not asked (reported as not run)
]


def _id(case) -> str:
    return f"{case[0]}-{case[1]}" if len(case) == 3 else case[0]


@pytest.fixture
def case(env):
    clean_data(env)
    return Case(env)


@pytest.fixture(scope="module")
def shared_env(pg, tmp_path_factory):
    """One clean environment for the cases that only change config files (creating the real
    Synapse schema's database takes a second or two)."""
    tag = uuid.uuid4().hex[:8]
    synapse_db, mas_db = f"synapse_advisor_{tag}", f"mas_advisor_{tag}"
    pg.create_database(synapse_db, template=synapse_schema.create_template(pg, synapse_schema.LATEST))
    pg.create_database(mas_db, template=mas_schema.create_template(pg, "own-1.22"))
    env = migration_env.MigrationEnv(pg, synapse_db, mas_db, str(tmp_path_factory.mktemp("advisor")))
    clean_data(env)
    yield env
    pg.drop_database(synapse_db)
    pg.drop_database(mas_db)


@pytest.fixture
def shared_case(shared_env):
    """A case over the file's shared clean pair: for a test that changes config files and options only (a
    write to either database fails the test: Case's shared guard)."""
    return Case(shared_env, shared=True)


def case_for(change, request) -> Case:
    """A case over the shared clean pair: a @fresh change gets a copy of each database it writes to (copied
    from the clean pair as it writes, the other one stays shared), any other change fails if it writes."""
    shared = request.getfixturevalue("shared_env")
    if getattr(change, "fresh", False):
        case = Case(shared, copy_on_write=True)
        request.addfinalizer(case.drop_copies)
        return case
    return Case(shared, shared=True)


@pytest.mark.parametrize("check, severity, change", FIRES, ids=[
    f"{c}-{s}-{i}" for i, (c, s, _change) in enumerate(FIRES)])
def test_check_fires(request, check, severity, change):
    case = case_for(change, request)
    change(case)
    result = case.run()
    hits = found(result, check)
    assert hits, f"{check} did not fire: {json.dumps(result['findings'], indent=1)}"
    assert severity in {h["severity"] for h in hits}, hits
    for hit in hits:
        assert hit["message"] and hit["where"] and hit["remedy"], hit
    # A finding is counted where it belongs, and the exit code follows.
    assert result["summary"]["errors"] == sum(1 for f in result["findings"] if f["severity"] == ERROR)
    if severity == ERROR:
        assert advisor.exit_code(result) == 10


def test_a_mas_that_does_not_answer_is_named_with_the_url_tried(request):
    case = case_for(cases.nothing, request)
    url = f"http://127.0.0.1:{homeservers.free_port()}"
    case.options["mas_url"] = url + "/"
    result = case.run()
    hits = found(result, "mas_answers")
    assert [h["severity"] for h in hits] == [ERROR]
    assert hits[0]["message"].startswith(f"MAS does not answer at {url}/health ("), hits
    assert hits[0]["where"] == f"{url}/health"
    assert "Synapse is not stopped while MAS does not answer" in hits[0]["remedy"]
    # Another MAS answers there: the issuer it names is not the one this MAS config declares.
    with MasStandIn(issuer="https://other-mas.example.test/", port=int(url.rsplit(":", 1)[1])):
        hits = found(case.run(), "mas_answers")
    assert [h["where"] for h in hits] == [f"{url}/.well-known/openid-configuration"]
    assert "'https://other-mas.example.test/'" in hits[0]["message"] and url in hits[0]["message"]


def test_mas_running_says_that_an_import_is_running_and_to_wait_for_it(request):
    case = case_for(cases.mas_import_running, request)
    cases.mas_import_running(case)
    hits = found(case.run(), "mas_running")
    assert [h["severity"] for h in hits] == [ERROR]
    assert hits[0]["message"].endswith("(one of them is a syn2mas import running right now)"), hits
    assert hits[0]["remedy"] == "Wait for the running import to finish, then run the advisor again"


@pytest.mark.parametrize("check, change", QUIET, ids=[f"{c}-{i}" for i, (c, _change) in enumerate(QUIET)])
def test_check_stays_quiet(request, check, change):
    case = case_for(change, request)
    change(case)
    result = case.run()
    assert not found(result, check), json.dumps(found(result, check), indent=1)


def test_every_check_has_a_firing_and_a_quiet_test():
    assert {c for c, _severity, _change in FIRES} == set(advisor.CHECKS)
    assert {c for c, _change in QUIET} == set(advisor.CHECKS)


# -- the clean pair, across the supported Synapse and MAS schemas ----------------------------

@pytest.fixture(scope="module")
def answering_mas():
    """MAS (a stand-in) answering as the MAS of the clean pair's config, one for the cases that only need it to
    answer (a MAS of their own costs two processes to start and one to stop)."""
    mas = MasStandIn(issuer=cases.CLEAN_MAS["http"]["issuer"]).start()
    yield mas
    mas.stop()


@pytest.mark.parametrize("synapse_version", synapse_schema.VERSIONS)
@pytest.mark.parametrize("mas_variant", list(mas_schema.VARIANTS))
def test_a_clean_well_configured_pair_has_no_error_and_no_warning(make_env, answering_mas, synapse_version,
                                                                  mas_variant):
    env = make_env(synapse_version=synapse_version, mas_variant=mas_variant)
    clean_data(env)
    case = Case(env)
    case.options["mas_url"] = answering_mas.url  # MAS, answering as the MAS of this config: every check runs
    result = case.run()
    assert [f for f in result["findings"] if f["severity"] != INFO] == []
    assert advisor.exit_code(result) == 0
    summary = result["summary"]
    assert summary["not_run"] == []
    assert (summary["users"], summary["passwords"], summary["devices"], summary["access_tokens"],
            summary["refresh_tokens"]) == (3, 2, 3, 3, 1)
    assert summary["mas_schema"]["release"] in ("1.0.0", "1.22.0")
    assert {f["check"] for f in result["findings"]} == {"migration_counts"}


# -- details that the tables above do not show -------------------------------------------------

@pytest.mark.parametrize("synapse_version", synapse_schema.VERSIONS)
def test_schema_92_without_a_delta_of_synapse_1_136_is_too_old(make_env, synapse_version):
    env = make_env(synapse_version=synapse_version)
    clean_data(env)
    env.pg.execute("DELETE FROM applied_schema_deltas WHERE file = '92/09_thread_subscriptions_update.sql'",
                   env.synapse_db)
    result = Case(env).run()
    hits = found(result, "synapse_schema_too_old")
    if synapse_version == synapse_schema.OLDEST:  # schema version 92: the deltas decide
        assert hits and "92/09_thread_subscriptions_update.sql" in hits[0]["message"]
    else:  # schema version 94: newer than 1.136 whatever its deltas
        assert not hits


def test_empty_sections_are_absent_and_never_crash(shared_case):
    case = shared_case
    for key in ("cas_config", "saml2_config", "jwt_config", "password_config", "login_via_existing_session",
                "user_consent", "experimental_features", "matrix_authentication_service", "oidc_providers",
                "oidc_config", "password_providers", "modules", "ldap_config"):
        case.synapse[key] = None
    case.scheme(secret=None)  # no pepper once password_config is empty
    case.mas.update(captcha=None, branding=None, upstream_oauth2=None)
    case.options["upstream_provider_mapping"] = [
        f"{idp}:{format_ulid(pid)}" for idp, pid in case.env.providers.items()]
    result = case.run()
    assert [f for f in result["findings"] if f["severity"] != INFO] == []


def test_a_section_of_the_wrong_type_is_an_error_naming_the_key(shared_case):
    case = shared_case
    case.synapse["cas_config"] = "yes"
    hit = found(case.run(), "synapse_config_invalid")
    assert hit and hit[0]["where"].endswith("homeserver.yaml: cas_config")


def test_messages_carry_the_numbers_and_a_few_examples(case):
    with case.data() as s:
        for name in ("ghost1", "ghost2", "ghost3"):
            s.threepid(f"@{name}:example.test", "email", f"{name}@example.test")
        s.user("mallory", server_name="other.example")
        s.user("trudy", server_name="evil.example")
    result = case.run()
    orphan = found(result, "orphan_rows")[0]
    assert "3 rows of user_threepids" in orphan["message"]
    assert "@ghost1:example.test" in orphan["message"] and "@ghost3:example.test" in orphan["message"]
    assert orphan["where"] == "Synapse database, table user_threepids"
    wrong = found(result, "wrong_server_name_users")[0]
    assert "2 users" in wrong["message"] and "@mallory:other.example" in wrong["message"]


def test_sso_links_of_saml_and_of_a_removed_oidc_provider_say_the_way_out(case):
    with case.data() as s:
        s.external_id("@alice:example.test", "saml", "alice")
        s.external_id("@bob:example.test", "oidc-oldcorp", "bob-sub")
    hits = {h["message"].split("'")[1]: h for h in found(case.run(), "sso_links_unknown_provider")}
    assert set(hits) == {"saml", "oidc-oldcorp"}
    assert "SAML" in hits["saml"]["message"]
    assert "no longer in Synapse's config" in hits["oidc-oldcorp"]["message"]
    for hit in hits.values():
        assert "synapse_idp_id" in hit["remedy"] and "skipUnmappedProviders" in hit["remedy"]


def test_without_a_mas_config_the_mas_side_is_reported_as_not_run(shared_case):
    case = shared_case
    case.options["mas_config"] = []
    result = case.run()
    not_run = {item["check"]: item["reason"] for item in result["summary"]["not_run"]}
    for check, (group, _description) in advisor.CHECKS.items():
        mas_side = group in (advisor.MAS_CONFIG, advisor.MAS_DB)
        if mas_side and check not in ("mas_config_invalid", "provider_mapping_invalid"):
            assert "no MAS config given" in not_run.get(check, ""), check
    assert [f for f in result["findings"] if f["severity"] != INFO] == []
    assert "checks not run (no MAS config given" in advisor.format_human(result)


def test_a_mas_database_uri_alone_runs_the_mas_database_checks(case):
    case.options.update(mas_config=[], mas_database_uri=case.env.pg.uri(case.env.mas_db))
    case.sql_mas("INSERT INTO users (user_id, username, created_at) VALUES (gen_random_uuid(), 'x', now())")
    result = case.run()
    assert found(result, "mas_not_empty")
    assert "mas_homeserver_mismatch" in {i["check"] for i in result["summary"]["not_run"]}


def test_the_counts_are_exactly_those_of_the_import(case):
    cases.deactivated_with_device(case)
    cases.orphan_threepid(case)
    cases.device_gone(case)
    cases.appservice(case)
    cases.guest(case)
    cases.msisdn(case)
    cases.bad_ip(case)
    with case.data() as s:
        s.cross_signing_devices("@alice:example.test")
    result = case.run()
    imported = run_import(ImportOptions(synapse_config=[case.env.homeserver_yaml], mas_config=[case.env.mas_yaml],
                                        dry_run=True))
    assert set(imported["counts"]) == set(result["summary"]["counts"])
    for stage, counts in imported["counts"].items():
        mine = result["summary"]["counts"][stage]
        assert mine["migrated"] == counts["migrated"], stage
        assert mine["fixed"] == counts["fixed"], stage  # one shape: what was repaired -> count
        if stage != "deviceless_sessions":  # the import reports its skips under access_tokens
            assert {r: v["count"] for r, v in mine["skipped_reasons"].items()} == \
                   {r: v["count"] for r, v in counts["skipped_reasons"].items()}, stage
    # the orphan's email, and the deactivated user's (left behind like its phone numbers)
    assert imported["counts"]["emails"]["skipped"] == 2 and imported["counts"]["access_tokens"]["skipped"] >= 3


def test_the_advisor_writes_nothing_to_either_database(case):
    """Byte-for-byte identical dumps of both databases after runs that go through every path."""
    for change in (cases.orphan_threepid, cases.device_gone, cases.appservice, cases.guest, cases.msisdn, cases.cas_links, cases.bad_ip,
                   cases.deactivated_with_device, cases.mas_marker):
        change(case)
    case.synapse.update(enable_registration=True, allow_guest_access=True)
    env = case.env
    before = env.synapse_dump(), env.mas_dump()
    result = case.run()
    assert result["summary"]["errors"] and result["summary"]["warnings"]
    case.options["for_real_import"] = True
    case.hold_connection(env.synapse_db, "synapse_main")
    case.run()
    assert (env.synapse_dump(), env.mas_dump()) == before
