//! Quantity parsing and formatting: tables, malformed input, round trips.
#![allow(clippy::unwrap_used)] // tests may panic
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use proptest::prelude::*;
use tailor_crds::quantity::*;

fn q(s: &str) -> K8sQuantity {
    K8sQuantity(s.to_owned())
}

#[test]
fn cpu_table() {
    let cases: &[(&str, i64)] = &[
        ("0", 0),
        ("1", 1000),
        ("2", 2000),
        ("250m", 250),
        ("1500m", 1500),
        ("0.5", 500),
        ("+.5", 500),
        ("1.", 1000),
        ("0.1m", 1), // rounded up, like MilliValue()
        ("100u", 1),
        ("1000000n", 1),
        ("1500000u", 1500),
        ("1k", 1_000_000),
        ("1e3", 1_000_000),
        ("1E-3", 1),
        ("2.5e2", 250_000),
        ("1e-10", 1),
        ("0.0001", 1),
        ("12345678m", 12_345_678),
        ("1Ki", 1_024_000),
        ("0e7", 0),
        ("-0", 0),
    ];
    for (text, want) in cases {
        assert_eq!(cpu_millis(&q(text)).unwrap(), *want, "cpu {text}");
    }
}

#[test]
fn memory_table() {
    let cases: &[(&str, i64)] = &[
        ("0", 0),
        ("1", 1),
        ("128974848", 128_974_848),
        ("129e6", 129_000_000),
        ("129M", 129_000_000),
        ("123Mi", 128_974_848),
        ("1Ki", 1024),
        ("1Mi", 1 << 20),
        ("1Gi", 1 << 30),
        ("1.5Gi", 3 << 29),
        ("1Ti", 1 << 40),
        ("1Pi", 1 << 50),
        ("1Ei", 1 << 60),
        ("7Ei", 7 << 60),
        ("1k", 1000),
        ("1M", 1_000_000),
        ("1G", 1_000_000_000),
        ("1T", 1_000_000_000_000),
        ("1P", 1_000_000_000_000_000),
        ("1E", 1_000_000_000_000_000_000),
        ("0.5Ki", 512),
        ("0.3", 1), // rounded up, like Value()
        ("1500m", 2),
        ("1e9", 1_000_000_000),
        ("1.5e+3", 1500),
        ("9223372036854775807", i64::MAX),
        ("000012Mi", 12 << 20),
    ];
    for (text, want) in cases {
        assert_eq!(memory_bytes(&q(text)).unwrap(), *want, "memory {text}");
    }
}

#[test]
fn malformed_values_are_errors_naming_the_value() {
    for text in [
        "", "Mi", "1Xi", "1 Gi", " 1", "1Gi ", "--1", "1..2", ".", "1e", "1e1.5", "1ee3", "1.2.3",
        "abc", "1gi", "1K", "+", "1e+", "0x10", "1_000",
    ] {
        let e = Quantity::parse(text).unwrap_err();
        assert!(
            e.to_string().contains(&format!("{text:?}")),
            "error for {text:?} must name it: {e}"
        );
    }
}

#[test]
fn out_of_range_and_negative() {
    assert!(matches!(
        memory_bytes(&q("9223372036854775808")),
        Err(QuantityError::OutOfRange { .. })
    ));
    assert!(matches!(
        memory_bytes(&q("8Ei")),
        Err(QuantityError::OutOfRange { .. })
    ));
    assert!(matches!(
        cpu_millis(&q("1e100")),
        Err(QuantityError::OutOfRange { .. })
    ));
    assert!(matches!(
        cpu_millis(&q("1e10000000")),
        Err(QuantityError::Syntax { .. })
    ));
    let e = cpu_millis(&q("-100m")).unwrap_err();
    assert_eq!(
        e,
        QuantityError::Negative {
            value: "-100m".into(),
            resource: "cpu"
        }
    );
    assert!(e.to_string().contains("\"-100m\""));
    assert!(matches!(
        memory_bytes(&q("-1Gi")),
        Err(QuantityError::Negative { .. })
    ));
    // Generic conversion of negatives rounds toward +inf, like the API server.
    assert_eq!(Quantity::parse("-1.5").unwrap().to_units().unwrap(), -1);
    assert_eq!(
        Quantity::parse("-1500m").unwrap().to_milli().unwrap(),
        -1500
    );
}

#[test]
fn too_many_digits_is_an_error() {
    let long = "1".repeat(39);
    assert!(matches!(
        Quantity::parse(&long),
        Err(QuantityError::Syntax { .. })
    ));
    // Zeros are not significant digits.
    let zeros = format!("1{}", "0".repeat(60));
    assert!(Quantity::parse(&zeros).is_ok());
    assert!(Quantity::parse(&format!("0.{}1", "0".repeat(60))).is_ok());
}

#[test]
fn formats_briefly() {
    assert_eq!(format_cpu_millis(0).0, "0");
    assert_eq!(format_cpu_millis(250).0, "250m");
    assert_eq!(format_cpu_millis(2000).0, "2");
    assert_eq!(format_cpu_millis(1500).0, "1500m");
    assert_eq!(format_memory_bytes(0).0, "0");
    assert_eq!(format_memory_bytes(512 << 20).0, "512Mi");
    assert_eq!(format_memory_bytes(1 << 30).0, "1Gi");
    assert_eq!(format_memory_bytes(1_500_000).0, "1500k");
    assert_eq!(format_memory_bytes(2_000_000_000).0, "2G");
    assert_eq!(format_memory_bytes(1023).0, "1023");
    assert_eq!(format_memory_bytes(3 << 29).0, "1536Mi");
    assert_eq!(format_memory_bytes(i64::MAX).0, "9223372036854775807");
}

proptest! {
    #[test]
    fn cpu_round_trips(millis in 0i64..=i64::MAX) {
        let text = format_cpu_millis(millis);
        prop_assert_eq!(cpu_millis(&text).unwrap(), millis);
    }

    #[test]
    fn memory_round_trips(bytes in 0i64..=i64::MAX) {
        let text = format_memory_bytes(bytes);
        prop_assert_eq!(memory_bytes(&text).unwrap(), bytes);
    }

    #[test]
    fn memory_round_trips_on_round_values(n in 0i64..1_000_000, shift in 0u32..40) {
        let bytes = n << shift;
        prop_assert_eq!(memory_bytes(&format_memory_bytes(bytes)).unwrap(), bytes);
    }

    #[test]
    fn any_grammatical_text_parses_and_reformats_to_the_same_value(
        sign in prop::sample::select(vec!["", "+"]),
        int in "[0-9]{0,6}",
        frac in "[0-9]{0,3}",
        suffix in prop::sample::select(vec!["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "E-2", "e+1"]),
    ) {
        prop_assume!(!(int.is_empty() && frac.is_empty()));
        let text = if frac.is_empty() { format!("{sign}{int}{suffix}") } else { format!("{sign}{int}.{frac}{suffix}") };
        let bytes = memory_bytes(&q(&text)).unwrap();
        prop_assert_eq!(memory_bytes(&format_memory_bytes(bytes)).unwrap(), bytes);
        let millis = cpu_millis(&q(&text)).unwrap();
        prop_assert_eq!(cpu_millis(&format_cpu_millis(millis)).unwrap(), millis);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,12}") {
        let _ = Quantity::parse(&text).map(|p| (p.to_milli(), p.to_units()));
    }
}
