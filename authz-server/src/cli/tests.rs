//! The command line's tests: the flags parse, and each `serve` flag has its environment variable.

use super::*;
use clap::CommandFactory;

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn every_serve_flag_can_come_from_a_certbind_authz_environment_variable() {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let mut seen = 0;
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long().filter(|l| *l != "help") else {
            continue;
        };
        let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
        let want = format!("CERTBIND_AUTHZ_{}", long.replace('-', "_").to_uppercase());
        assert_eq!(env, want, "--{long}");
        seen += 1;
    }
    assert!(seen >= 10, "{seen}");
}

#[test]
fn serve_defaults_match_the_contract() {
    let cli = Cli::try_parse_from(["certbind-authz", "serve"]).unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    assert_eq!(args.listen.to_string(), "127.0.0.1:9443");
    assert_eq!(args.token_ttl, 300);
    assert_eq!(args.issuer, "https://127.0.0.1:9443");
}

#[test]
fn takes_a_thumbprint_or_jti_starting_with_a_hyphen_as_the_value() {
    let cli = Cli::try_parse_from(["certbind-authz", "revoke", "--cert", "-JxYz"]).unwrap();
    let Command::Revoke(args) = cli.command else {
        panic!("not revoke");
    };
    assert_eq!(args.cert.as_deref(), Some("-JxYz"));
    let cli = Cli::try_parse_from(["certbind-authz", "revoke", "--jti", "-a_b"]).unwrap();
    let Command::Revoke(args) = cli.command else {
        panic!("not revoke");
    };
    assert_eq!(args.jti.as_deref(), Some("-a_b"));
}

#[test]
fn the_store_is_sqlite_unless_a_url_is_given_and_rotation_by_age_needs_one() {
    let cli = Cli::try_parse_from(["certbind-authz", "serve"]).unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    assert_eq!(args.store, None);
    let url = "postgres://certbind@127.0.0.1:5432/certbind";
    let cli = Cli::try_parse_from([
        "certbind-authz",
        "serve",
        "--store",
        url,
        "--rotate-keys-every",
        "3600",
    ])
    .unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    assert_eq!(
        (args.store.as_deref(), args.rotate_keys_every),
        (Some(url), Some(3600))
    );
    assert!(
        Cli::try_parse_from(["certbind-authz", "serve", "--rotate-keys-every", "3600"]).is_err()
    );
    assert!(
        Cli::try_parse_from([
            "certbind-authz",
            "serve",
            "--store",
            url,
            "--rotate-keys-every",
            "4"
        ])
        .is_err()
    );
    assert!(open_revocations(Some("mysql://x/y"), std::path::Path::new("/nonexistent")).is_err());
}

#[test]
fn refuses_token_lifetimes_above_300_seconds() {
    assert!(Cli::try_parse_from(["certbind-authz", "serve", "--token-ttl", "301"]).is_err());
    assert!(Cli::try_parse_from(["certbind-authz", "serve", "--token-ttl", "0"]).is_err());
    assert!(Cli::try_parse_from(["certbind-authz", "serve", "--token-ttl", "60"]).is_ok());
}

#[test]
fn issuers_must_be_https_without_query_or_fragment() {
    assert!(valid_issuer("https://127.0.0.1:9443"));
    assert!(!valid_issuer("http://127.0.0.1:9443"));
    assert!(!valid_issuer("https://"));
    assert!(!valid_issuer("https://a?b"));
    assert!(!valid_issuer("https://a#b"));
}
