//! Property tests: no byte string makes the .npy/mask readers (full or
//! header-only) or the config loader panic; they return an error instead.

use proptest::prelude::*;

fn npy_prefix() -> impl Strategy<Value = Vec<u8>> {
    // Mostly valid-looking headers with mutated dicts, plus raw garbage.
    let dict = prop_oneof![
        Just("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }".to_string()),
        Just("{'descr': '<f2', 'fortran_order': True, 'shape': (1, 1, 1), }".to_string()),
        Just("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 3), }".to_string()),
        "[ -~]{0,80}",
    ];
    (dict, prop::collection::vec(any::<u8>(), 0..200), any::<u8>(), any::<bool>()).prop_map(|(d, body, major, garbage)| {
        if garbage {
            return body;
        }
        let mut h = d.into_bytes();
        h.push(b'\n');
        let mut b = b"\x93NUMPY".to_vec();
        b.push(major % 4);
        b.push(0);
        if major % 4 >= 2 {
            b.extend_from_slice(&(h.len() as u32).to_le_bytes());
        } else {
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        }
        b.extend_from_slice(&h);
        b.extend_from_slice(&body);
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn npy_readers_never_panic(bytes in npy_prefix()) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        std::fs::write(&p, &bytes).unwrap();
        let _ = bench::data::read_logits(&p);
        let _ = bench::data::read_score_map(&p);
        let _ = bench::data::read_mask(&p);
        let z = d.path().join("x.npz");
        std::fs::write(&z, &bytes).unwrap();
        let _ = bench::data::read_logits(&z);
        let _ = bench::data::read_score_map(&z);
        let q = d.path().join("x.png");
        std::fs::write(&q, &bytes).unwrap();
        let _ = bench::data::read_mask(&q);
        // the pre-flight's header-only readers agree with the full readers
        // on what is acceptable, and never panic either
        for f in [&p, &z] {
            let full = bench::data::read_logits(f).map(|l| vec![l.c, l.h, l.w]);
            let head = bench::data::npy::float_header(f, None, 3, "logits").map(|i| i.shape);
            if let Ok(shape) = &full {
                prop_assert_eq!(head.as_ref().ok(), Some(shape));
            }
        }
        let _ = bench::data::mask::mask_size(&p);
        let _ = bench::data::mask::mask_size(&q);
    }

    #[test]
    fn config_loader_never_panics(text in "[ -~\n]{0,300}") {
        let _ = bench::config::Config::parse(&text);
    }

    #[test]
    fn config_loader_never_panics_on_near_valid(extra in "[a-z_]{1,12} = [0-9\"a-z\\[\\]]{1,10}\n") {
        let base = "name = \"x\"\ndataset = \"d\"\nmethods = [\"msp\"]\n";
        let text = format!("{base}{extra}[[models]]\nid = \"a\"\nname = \"A\"\n");
        let _ = bench::config::Config::parse(&text);
    }
}
