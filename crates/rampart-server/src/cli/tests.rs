//! Unit tests of the command line: flag syntax, validation and refusals.

use std::path::PathBuf;

use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("rampart").chain(args.iter().copied()))
}

#[test]
fn both_value_syntaxes_and_bools() {
    let c = parse(&[
        "--model-repository",
        "/a",
        "--model-store=/b",
        "--allow-grpc=0",
        "--allow-metrics",
        "false",
        "--strict-readiness=1",
    ])
    .unwrap();
    assert_eq!(c.repository.model_repository, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    assert!(!c.grpc.allow_grpc && !c.metrics.allow_metrics && c.repository.strict_readiness);
    assert!(c.validate().is_ok());
    assert!(parse(&["--allow-grpc=maybe"]).is_err());
    assert!(parse(&["--no-such-flag"]).is_err());
}

#[test]
fn model_control_needs_credentials_or_loopback() {
    let base = ["--model-repository=/m", "--allow-metrics=false"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        parse(&args).unwrap().validate().map(|v| v.model_control_mode).map_err(|e| e.to_string())
    };
    for mode in ["--model-control-mode=explicit", "--model-control-mode=poll"] {
        let e = run(&[mode]).unwrap_err();
        assert!(e.contains("HTTP on 0.0.0.0:8000") && e.contains("gRPC on 0.0.0.0:8001"), "{e}");
        assert!(
            e.contains("--allow-unauthenticated-model-control=true")
                && e.contains("--http-address=127.0.0.1"),
            "{e}"
        );
        // Only the listener that is still exposed is named.
        let e = run(&[mode, "--http-address=127.0.0.1"]).unwrap_err();
        assert!(!e.contains("HTTP on") && e.contains("gRPC on"), "{e}");
        let e = run(&[mode, "--allow-grpc=false", "--http-restricted-api=health:k=v"]).unwrap_err();
        assert!(e.contains("HTTP on"), "restricting another category does not count: {e}");
        assert!(run(&[mode, "--http-address=127.0.0.1", "--grpc-address=ipv6:[::1]"]).is_ok());
        assert!(
            run(&[
                mode,
                "--allow-grpc=false",
                "--http-restricted-api=model-repository:admin-key=s3cret"
            ])
            .is_ok()
        );
        assert!(
            run(&[
                mode,
                "--allow-http=false",
                "--grpc-restricted-protocol=model-repository,health:admin-key=s3cret"
            ])
            .is_ok()
        );
        assert!(run(&[mode, "--allow-unauthenticated-model-control=true"]).is_ok());
    }
    assert_eq!(run(&[]).unwrap(), rampart_core::ModelControlMode::None, "mode none needs nothing");
    let e = run(&[
        "--model-control-mode=explicit",
        "--allow-unauthenticated-model-control=true",
        "--load-model=*",
        "--load-model=a",
    ])
    .unwrap_err();
    assert!(e.contains("Wildcard model name '*' must be the ONLY startup model"), "{e}");
    let e = run(&[
        "--model-control-mode=explicit",
        "--allow-unauthenticated-model-control=true",
        "--load-model=../x",
    ])
    .unwrap_err();
    assert!(e.contains("path traversal"), "{e}");
}

#[test]
fn missing_features_refused() {
    let c = parse(&["--model-repository=/m"]).unwrap();
    assert!(
        c.validate().unwrap().metrics.counter_latencies,
        "metrics on by default, Triton's defaults"
    );
    let c = parse(&["--model-repository=/m", "--metrics-config=counter_latencies=false"]).unwrap();
    assert!(!c.validate().unwrap().metrics.counter_latencies);
    let c = parse(&[
        "--model-repository=/m",
        "--metrics-config=summary_latencies=true",
        "--metrics-config=summary_quantiles=0.5:0.1,0.99:0.001",
    ])
    .unwrap();
    let s = c.validate().unwrap().metrics.summaries.unwrap();
    assert_eq!(s.quantiles, vec![(0.5, 0.1), (0.99, 0.001)]);
    let c = parse(&["--model-repository=/m", "--metrics-config=summary_quantiles=2:0.1"]).unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("values in 0..1"));
    let c = parse(&["--model-repository=/m", "--metrics-config=bogus=1"]).unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("unknown setting 'bogus'"));
    let c = parse(&["--model-repository=/m", "--metrics-port=8000"]).unwrap();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("metrics requests and HTTP requests at the same port 8000")
    );
    let c = parse(&[
        "--model-repository=/m",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--model-control-mode=sometimes",
    ])
    .unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("expected none, poll or explicit"));
    let c = parse(&[
        "--model-repository=/m",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--load-model=x",
    ])
    .unwrap();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("requires setting '--model-control-mode=explicit'")
    );
    let c = parse(&["--model-repository=/m", "--allow-metrics=false", "--metrics-port=9"]).unwrap();
    assert_eq!(c.validate().unwrap().inert.len(), 1);
    let c = parse(&[
        "--model-repository=/m",
        "--allow-metrics=false",
        "--http-thread-count=4",
        "--cache-directory=/x",
    ])
    .unwrap();
    let inert = c.validate().unwrap().inert;
    assert!(
        inert.iter().any(|n| n.contains("--http-thread-count, --cache-directory")),
        "{inert:?}"
    );
    let c = parse(&["--model-repository=/m", "--allow-metrics=false", "--grpc-port=8000"]).unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("same port"));
    let c =
        parse(&["--model-repository=/m", "--allow-metrics=false", "--grpc-use-ssl=true"]).unwrap();
    assert!(
        c.validate().unwrap_err().to_string().contains("--grpc-use-ssl needs --grpc-server-cert")
    );
    let c = parse(&[
        "--model-repository=/m",
        "--allow-metrics=false",
        "--http-use-ssl-mutual=1",
        "--http-server-cert=c",
        "--http-server-key=k",
    ])
    .unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("--http-root-cert"));
    let c = parse(&[
        "--model-repository=/m",
        "--allow-metrics=false",
        "--http-use-ssl=1",
        "--http-server-cert=c",
        "--http-server-key=k",
    ])
    .unwrap();
    assert!(c.validate().unwrap().http_tls.is_some());
    let c = parse(&[
        "--model-repository=/m",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--backend-config=onnxruntime,engine=tract",
    ])
    .unwrap();
    assert_eq!(c.validate().unwrap().engine, crate::backends::EngineChoice::Tract);
    let c = parse(&[
        "--model-repository=/m",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--disable-auto-complete-config",
    ])
    .unwrap();
    assert!(!c.validate().unwrap().autocomplete);
}

#[test]
fn errors_are_typed() {
    let refuse = |extra: &[&str]| {
        let args: Vec<&str> = ["--model-repository=/m"].iter().chain(extra).copied().collect();
        parse(&args).unwrap().validate().unwrap_err()
    };
    assert_eq!(parse(&[]).unwrap().validate().unwrap_err(), CliError::NoModelRepository);
    assert_eq!(
        refuse(&["--max-queued-requests=0"]),
        CliError::NotPositive("--max-queued-requests")
    );
    assert_eq!(
        refuse(&["--grpc-port=8000"]).to_string(),
        "The server cannot listen to GRPC requests and HTTP requests at the same port 8000"
    );
    let e = refuse(&["--model-namespacing=true"]);
    assert!(matches!(e, CliError::NotYet { flag: "model-namespacing", .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "--model-namespacing=true is not supported yet (model namespacing); Rampart refuses it rather than ignoring it"
    );
    assert!(matches!(
        refuse(&["--model-control-mode=poll"]),
        CliError::ModelControlExposed { mode: "poll", .. }
    ));
}
