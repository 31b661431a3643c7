//! Data inputs: .npy logits / score maps / masks, PNG masks, dataset
//! discovery and the deterministic synthetic dataset.

use bench::data::mask::{read_mask, write_mask_png};
use bench::data::npy::{read_logits, read_mask_npy, read_score_map, write_npy_f16, write_npy_f32, write_npy_u8};
use bench::data::npz::write_npz;
use bench::data::{Dataset, LogitData};
use bench::synth::{SynthSpec, generate};
use half::f16;

mod common;
use common::tree;
use std::path::{Path, PathBuf};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A hand-built .npy (version 1.0): header text padded to 64 bytes.
fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    // A structured dtype (list literal) goes in unquoted.
    let descr = if descr.starts_with('[') {
        descr.to_string()
    } else {
        format!("'{descr}'")
    };
    let mut text = format!(
        "{{'descr': {descr}, 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((text.len() as u16).to_le_bytes());
    out.extend(text.as_bytes());
    out.extend(data);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn sample(c: usize, h: usize, w: usize) -> Vec<f32> {
    (0..c * h * w)
        .map(|i| (i as f32 * 0.37).sin() * 5.0 + (i % 7) as f32)
        .collect()
}

/// The error message, asserting it is one line naming the file.
fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>, path: &Path) -> String {
    let msg = format!("{:#}", r.expect_err("expected an error"));
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(name), "error does not name {name}: {msg}");
    assert!(!msg.contains('\n'), "error is not one line: {msg}");
    msg
}

fn f32s(l: &bench::data::Logits) -> Vec<f32> {
    match &l.data {
        LogitData::F32(v) => v.clone(),
        LogitData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
    }
}

#[test]
fn logits_roundtrip_f32_and_f16() {
    let d = tmp();
    let (c, h, w) = (3, 5, 7);
    let v = sample(c, h, w);
    let p = d.path().join("a.npy");
    write_npy_f32(&p, &[c as u64, h as u64, w as u64], &v).unwrap();
    let l = read_logits(&p).unwrap();
    assert_eq!((l.c, l.h, l.w, l.dtype()), (c, h, w, "float32"));
    assert_eq!(f32s(&l), v);

    let hv: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let p16 = d.path().join("b.npy");
    write_npy_f16(&p16, &[c as u64, h as u64, w as u64], &hv).unwrap();
    let l = read_logits(&p16).unwrap();
    assert_eq!(l.dtype(), "float16");
    match &l.data {
        LogitData::F16(x) => assert_eq!(x, &hv),
        _ => panic!("f16 must stay f16"),
    }

    // Score maps: f32 and f16 -> f32.
    let ps = d.path().join("s.npy");
    write_npy_f32(&ps, &[h as u64, w as u64], &v[..h * w]).unwrap();
    assert_eq!(read_score_map(&ps).unwrap(), (h, w, v[..h * w].to_vec()));
    let ps16 = d.path().join("s16.npy");
    write_npy_f16(&ps16, &[h as u64, w as u64], &hv[..h * w]).unwrap();
    let (sh, sw, sv) = read_score_map(&ps16).unwrap();
    assert_eq!((sh, sw), (h, w));
    assert_eq!(sv, hv[..h * w].iter().map(|x| x.to_f32()).collect::<Vec<_>>());
}

#[test]
fn large_logits_cross_parallel_chunks() {
    // > 4 MiB of data so the reader takes the parallel chunked path, with a
    // NaN placed late to check the reported position.
    let d = tmp();
    let (c, h, w) = (5, 300, 1000);
    let mut v = sample(c, h, w);
    let p = d.path().join("big.npy");
    write_npy_f32(&p, &[c as u64, h as u64, w as u64], &v).unwrap();
    assert_eq!(f32s(&read_logits(&p).unwrap()), v);
    let i = 4 * h * w + 123 * w + 456;
    v[i] = f32::NAN;
    write_npy_f32(&p, &[c as u64, h as u64, w as u64], &v).unwrap();
    let msg = err_of(read_logits(&p), &p);
    assert!(msg.contains("NaN") && msg.contains("class 4, y 123, x 456"), "{msg}");
}

#[test]
fn fortran_order_matches_c_order() {
    let d = tmp();
    let (c, h, w) = (2, 3, 4);
    let v = sample(c, h, w);
    // Fortran layout: element (k, y, x) at k + c*(y + h*x).
    let mut f = vec![0f32; v.len()];
    for k in 0..c {
        for y in 0..h {
            for x in 0..w {
                f[k + c * (y + h * x)] = v[(k * h + y) * w + x];
            }
        }
    }
    let bytes: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
    let p = d.path().join("fortran.npy");
    write(&p, &npy_bytes("<f4", true, "(2, 3, 4)", &bytes));
    let l = read_logits(&p).unwrap();
    assert_eq!((l.c, l.h, l.w), (c, h, w));
    assert_eq!(f32s(&l), v);

    // 2-D Fortran score map and mask.
    let s: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
    let mut sf = vec![0f32; h * w];
    let mut mf = vec![0u8; h * w];
    for y in 0..h {
        for x in 0..w {
            sf[y + h * x] = s[y * w + x];
            mf[y + h * x] = (y * w + x) as u8;
        }
    }
    let p = d.path().join("fs.npy");
    let bytes: Vec<u8> = sf.iter().flat_map(|x| x.to_le_bytes()).collect();
    write(&p, &npy_bytes("<f4", true, "(3, 4)", &bytes));
    assert_eq!(read_score_map(&p).unwrap().2, s);
    let p = d.path().join("fm.npy");
    write(&p, &npy_bytes("|u1", true, "(3, 4)", &mf));
    let m = read_mask_npy(&p).unwrap();
    assert_eq!(m.values, (0..12u16).collect::<Vec<_>>());
}

#[test]
fn big_endian_decodes() {
    let d = tmp();
    let v = sample(2, 3, 4);
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
    let p = d.path().join("be.npy");
    write(&p, &npy_bytes(">f4", false, "(2, 3, 4)", &bytes));
    assert_eq!(f32s(&read_logits(&p).unwrap()), v);

    let hv: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let bytes: Vec<u8> = hv.iter().flat_map(|x| x.to_bits().to_be_bytes()).collect();
    let p = d.path().join("be16.npy");
    write(&p, &npy_bytes(">f2", false, "(2, 3, 4)", &bytes));
    match read_logits(&p).unwrap().data {
        LogitData::F16(x) => assert_eq!(x, hv),
        _ => panic!(),
    }

    let m: Vec<u16> = vec![0, 1, 255, 300, 65535, 7];
    let bytes: Vec<u8> = m.iter().flat_map(|x| x.to_be_bytes()).collect();
    let p = d.path().join("bem.npy");
    write(&p, &npy_bytes(">u2", false, "(2, 3)", &bytes));
    assert_eq!(read_mask_npy(&p).unwrap().values, m);
}

#[test]
fn bad_logits_are_one_line_errors_naming_the_file() {
    let d = tmp();
    let v = sample(2, 3, 4);
    let good: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let case = |name: &str, bytes: &[u8], expect: &str| {
        let p: PathBuf = d.path().join(name);
        write(&p, bytes);
        let msg = err_of(read_logits(&p), &p);
        assert!(
            msg.to_lowercase().contains(expect),
            "{name}: expected {expect:?} in {msg}"
        );
    };
    case(
        "truncated.npy",
        &npy_bytes("<f4", false, "(2, 3, 4)", &good[..good.len() - 10]),
        "truncated",
    );
    let mut extra = good.clone();
    extra.extend([0u8; 3]);
    case(
        "trailing.npy",
        &npy_bytes("<f4", false, "(2, 3, 4)", &extra),
        "trailing",
    );
    let ints: Vec<u8> = (0..24i32).flat_map(|x| x.to_le_bytes()).collect();
    case("int32.npy", &npy_bytes("<i4", false, "(2, 3, 4)", &ints), "int32");
    case("twod.npy", &npy_bytes("<f4", false, "(6, 4)", &good), "3-d");
    let mut nan = v.clone();
    nan[12 + 2 * 4 + 3] = f32::NAN; // class 1, y 2, x 3
    let nanb: Vec<u8> = nan.iter().flat_map(|x| x.to_le_bytes()).collect();
    case(
        "nan.npy",
        &npy_bytes("<f4", false, "(2, 3, 4)", &nanb),
        "class 1, y 2, x 3",
    );
    let mut h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    h[5] = f16::INFINITY;
    let hb: Vec<u8> = h.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
    case("inf16.npy", &npy_bytes("<f2", false, "(2, 3, 4)", &hb), "+inf");
    let mut garbage = b"\x93NUMPY\x01\x00".to_vec();
    let text = b"this is {not a dict literal ((\n";
    garbage.extend((text.len() as u16).to_le_bytes());
    garbage.extend(text);
    case("garbage.npy", &garbage, "header");
    case("empty.npy", b"", "empty");
    case("notnpy.npy", b"PK\x03\x04 definitely a zip", "not a .npy");
    case("zero.npy", &npy_bytes("<f4", false, "(2, 0, 4)", &[]), "zero-sized");
    // Header length pointing past the end of the file.
    let mut short = b"\x93NUMPY\x01\x00".to_vec();
    short.extend(5000u16.to_le_bytes());
    short.extend(b"{'descr'");
    case("shorthdr.npy", &short, "truncated");
    case("f64.npy", &npy_bytes("<f8", false, "(1, 1, 1)", &[0u8; 8]), "float64");
    case(
        "record.npy",
        &npy_bytes("[('a', '<f4')]", false, "(1, 1, 1)", &[0u8; 4]),
        "dtype",
    );
    // Missing file.
    let p = d.path().join("missing.npy");
    err_of(read_logits(&p), &p);
    // Score map rejects NaN too, and 3-D input.
    let p = d.path().join("score_nan.npy");
    write(&p, &npy_bytes("<f4", false, "(6, 4)", &nanb));
    let msg = err_of(read_score_map(&p), &p);
    assert!(msg.contains("NaN"), "{msg}");
    let p = d.path().join("score3d.npy");
    write(&p, &npy_bytes("<f4", false, "(2, 3, 4)", &good));
    err_of(read_score_map(&p), &p);
}

#[test]
fn npy_masks() {
    let d = tmp();
    let p = d.path().join("u8.npy");
    let vals: Vec<u8> = vec![0, 1, 255, 13, 0, 2];
    write_npy_u8(&p, &[2, 3], &vals).unwrap();
    let m = read_mask(&p).unwrap();
    assert_eq!((m.h, m.w), (2, 3));
    assert_eq!(m.values, vals.iter().map(|&x| x as u16).collect::<Vec<_>>());

    let p = d.path().join("i64.npy");
    let v64: Vec<i64> = vec![0, 1, 255, 1000, 65535, 3];
    let bytes: Vec<u8> = v64.iter().flat_map(|x| x.to_le_bytes()).collect();
    write(&p, &npy_bytes("<i8", false, "(3, 2)", &bytes));
    let m = read_mask(&p).unwrap();
    assert_eq!((m.h, m.w), (3, 2));
    assert_eq!(m.values, v64.iter().map(|&x| x as u16).collect::<Vec<_>>());

    let p = d.path().join("i32neg.npy");
    let bytes: Vec<u8> = [0i32, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
    write(&p, &npy_bytes("<i4", false, "(1, 2)", &bytes));
    let msg = err_of(read_mask(&p), &p);
    assert!(msg.contains("-1"), "{msg}");
    let p = d.path().join("big.npy");
    let bytes: Vec<u8> = [70000i64].iter().flat_map(|x| x.to_le_bytes()).collect();
    write(&p, &npy_bytes("<i8", false, "(1, 1)", &bytes));
    err_of(read_mask(&p), &p);
    let p = d.path().join("float_mask.npy");
    write(&p, &npy_bytes("<f4", false, "(1, 1)", &[0u8; 4]));
    err_of(read_mask(&p), &p);
    let p = d.path().join("mask3d.npy");
    write(&p, &npy_bytes("|u1", false, "(1, 1, 1)", &[0u8]));
    err_of(read_mask(&p), &p);
}

/// Encode a PNG with the png crate.
fn png_bytes(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<Vec<u8>>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p);
        }
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
    }
    out
}

#[test]
fn png_masks() {
    let d = tmp();
    // 8-bit gray via our writer.
    let p = d.path().join("g8.png");
    let vals: Vec<u8> = (0..12).map(|i| [0u8, 1, 255, 13][i % 4]).collect();
    write_mask_png(&p, 3, 4, &vals).unwrap();
    let m = read_mask(&p).unwrap();
    assert_eq!((m.h, m.w), (3, 4));
    assert_eq!(m.values, vals.iter().map(|&x| x as u16).collect::<Vec<_>>());

    // 16-bit gray keeps values.
    let v16: Vec<u16> = vec![0, 1, 300, 65535, 1000, 255];
    let bytes: Vec<u8> = v16.iter().flat_map(|x| x.to_be_bytes()).collect();
    let p = d.path().join("g16.png");
    write(
        &p,
        &png_bytes(3, 2, png::ColorType::Grayscale, png::BitDepth::Sixteen, None, &bytes),
    );
    let m = read_mask(&p).unwrap();
    assert_eq!((m.h, m.w), (2, 3));
    assert_eq!(m.values, v16);

    // Palette: indices, not colours.
    let palette: Vec<u8> = (0..20u8).flat_map(|i| [i * 10, 255 - i, 7]).collect();
    let idx: Vec<u8> = vec![0, 19, 5, 13, 1, 2];
    let p = d.path().join("pal.png");
    write(
        &p,
        &png_bytes(3, 2, png::ColorType::Indexed, png::BitDepth::Eight, Some(palette), &idx),
    );
    assert_eq!(
        read_mask(&p).unwrap().values,
        idx.iter().map(|&x| x as u16).collect::<Vec<_>>()
    );

    // 2-bit palette and 1-bit gray, unpacked (rows padded to bytes).
    let palette: Vec<u8> = (0..4u8).flat_map(|i| [i, i, i]).collect();
    // width 5: values 3,0,1,2,3 / 1,1,0,0,2 -> 2 bytes per row.
    let rows = [[3u8, 0, 1, 2, 3], [1, 1, 0, 0, 2]];
    let pack2 = |r: &[u8; 5]| {
        let mut b = [0u8; 2];
        for (x, &v) in r.iter().enumerate() {
            b[x / 4] |= v << (6 - 2 * (x % 4));
        }
        b
    };
    let data: Vec<u8> = rows.iter().flat_map(pack2).collect();
    let p = d.path().join("pal2.png");
    write(
        &p,
        &png_bytes(5, 2, png::ColorType::Indexed, png::BitDepth::Two, Some(palette), &data),
    );
    let m = read_mask(&p).unwrap();
    assert_eq!(m.values, rows.iter().flatten().map(|&x| x as u16).collect::<Vec<_>>());
    let p = d.path().join("g1.png");
    // width 10, 1 bit: 1010000011 -> bytes 0b10100000, 0b11000000
    write(
        &p,
        &png_bytes(
            10,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            None,
            &[0b1010_0000, 0b1100_0000],
        ),
    );
    assert_eq!(read_mask(&p).unwrap().values, vec![1, 0, 1, 0, 0, 0, 0, 0, 1, 1]);

    // RGB is rejected.
    let p = d.path().join("rgb.png");
    write(
        &p,
        &png_bytes(2, 2, png::ColorType::Rgb, png::BitDepth::Eight, None, &[0u8; 12]),
    );
    let msg = err_of(read_mask(&p), &p);
    assert!(msg.contains("single-channel"), "{msg}");
    let p = d.path().join("rgba.png");
    write(
        &p,
        &png_bytes(2, 2, png::ColorType::Rgba, png::BitDepth::Eight, None, &[0u8; 16]),
    );
    err_of(read_mask(&p), &p);

    // Corrupt PNG, empty PNG, unknown extension.
    let p = d.path().join("corrupt.png");
    let mut b = png_bytes(2, 2, png::ColorType::Grayscale, png::BitDepth::Eight, None, &[0u8; 4]);
    b.truncate(b.len() / 2);
    write(&p, &b);
    err_of(read_mask(&p), &p);
    let p = d.path().join("empty.png");
    write(&p, b"");
    err_of(read_mask(&p), &p);
    let p = d.path().join("mask.jpg");
    write(&p, b"xx");
    err_of(read_mask(&p), &p);
}

/// The bytes of a float32 .npy of `shape` holding `v`.
fn npy_f32_bytes(shape: &[u64], v: &[f32]) -> Vec<u8> {
    let d = tmp();
    let p = d.path().join("x.npy");
    write_npy_f32(&p, shape, v).unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn npz_logits_and_score_maps() {
    use bench::data::npy::{read_logits_key, read_score_map_key};
    let d = tmp();
    let (c, h, w) = (3, 4, 5);
    let v = sample(c, h, w);
    let logits = npy_f32_bytes(&[c as u64, h as u64, w as u64], &v);
    let score = npy_f32_bytes(&[h as u64, w as u64], &v[..h * w]);
    // np.savez(f, x) and np.savez_compressed(f, x): the only array is read.
    for compressed in [false, true] {
        let p = d.path().join(format!("one_{compressed}.npz"));
        write_npz(&p, &[("arr_0", logits.clone())], compressed).unwrap();
        assert_eq!(f32s(&read_logits(&p).unwrap()), v);
        let q = d.path().join(format!("s_{compressed}.npz"));
        write_npz(&q, &[("arr_0", score.clone())], compressed).unwrap();
        assert_eq!(read_score_map(&q).unwrap(), (h, w, v[..h * w].to_vec()));
    }
    // np.savez(f, logits=x, feats=y): the key picks the array.
    let p = d.path().join("two.npz");
    write_npz(&p, &[("feats", score.clone()), ("logits", logits.clone())], true).unwrap();
    assert_eq!(f32s(&read_logits_key(&p, Some("logits")).unwrap()), v);
    assert_eq!(read_score_map_key(&p, Some("feats")).unwrap().2, v[..h * w].to_vec());
    // ... and without a key it is an error listing the arrays and naming the option.
    let msg = err_of(read_logits(&p), &p);
    assert!(msg.contains("2 arrays") && msg.contains("'feats'") && msg.contains("'logits'") && msg.contains("npz_key"), "{msg}");
    // A key the archive lacks.
    let msg = err_of(read_logits_key(&p, Some("logit")), &p);
    assert!(msg.contains("no array 'logit'") && msg.contains("'logits'"), "{msg}");
    // No arrays at all.
    let p = d.path().join("empty.npz");
    write_npz(&p, &[], false).unwrap();
    let msg = err_of(read_logits(&p), &p);
    assert!(msg.contains("no arrays"), "{msg}");
    // Corrupt archives: random bytes, and a valid archive cut short.
    let p = d.path().join("junk.npz");
    write(&p, b"PK\x03\x04 this is not a zip file at all");
    let msg = err_of(read_logits(&p), &p);
    assert!(msg.contains("not a valid .npz"), "{msg}");
    let good = d.path().join("one_true.npz");
    let bytes = std::fs::read(&good).unwrap();
    let p = d.path().join("cut.npz");
    write(&p, &bytes[..bytes.len() / 2]);
    err_of(read_logits(&p), &p);
    // A corrupt member (flipped bytes in deflated data) is an error, not garbage.
    let mut bad = bytes.clone();
    for b in &mut bad[60..90] {
        *b ^= 0x5a;
    }
    let p = d.path().join("flipped.npz");
    write(&p, &bad);
    err_of(read_logits(&p), &p);
    // The member gets every .npy check; the error names file.npz[member].
    let mut nan = v.clone();
    nan[7] = f32::NAN;
    let p = d.path().join("nan.npz");
    write_npz(&p, &[("logits", npy_f32_bytes(&[c as u64, h as u64, w as u64], &nan))], false).unwrap();
    let msg = err_of(read_logits(&p), &p);
    assert!(msg.contains("nan.npz[logits]") && msg.contains("NaN"), "{msg}");
    let p = d.path().join("trunc.npz");
    write_npz(&p, &[("logits", logits[..logits.len() - 8].to_vec())], false).unwrap();
    let msg = err_of(read_logits(&p), &p);
    assert!(msg.contains("truncated"), "{msg}");
    let p = d.path().join("wrongdim.npz");
    write_npz(&p, &[("arr_0", score.clone())], false).unwrap();
    let msg = err_of(read_logits(&p), &p);
    assert!(msg.contains("3-D"), "{msg}");
}

#[cfg(not(feature = "hdf5"))]
#[test]
fn hdf5_score_maps_without_the_feature_name_the_feature() {
    let d = tmp();
    for name in ["a.h5", "b.hdf5"] {
        let p = d.path().join(name);
        write(&p, b"\x89HDF\r\n\x1a\n");
        let msg = err_of(read_score_map(&p), &p);
        assert!(msg.contains("without HDF5 support") && msg.contains("--features hdf5"), "{msg}");
    }
}

/// SegmentMeIfYouCan's layout: float16 `value` [H, W]. Runs only when built
/// with `--features hdf5` (needs the HDF5 C library).
#[cfg(feature = "hdf5")]
#[test]
fn hdf5_score_maps_smiyc_layout() {
    use bench::data::h5::write_score_map_h5;
    let d = tmp();
    let (h, w) = (3, 5);
    let v: Vec<f16> = (0..h * w).map(|i| f16::from_f32(i as f32 * 0.25 - 1.0)).collect();
    let p = d.path().join("img.hdf5");
    write_score_map_h5(&p, h, w, &v).unwrap();
    assert_eq!(read_score_map(&p).unwrap(), (h, w, v.iter().map(|x| x.to_f32()).collect()));
    // NaN and inf are errors naming the file and the pixel
    let mut bad = v.clone();
    bad[7] = f16::INFINITY;
    let p = d.path().join("inf.h5");
    write_score_map_h5(&p, h, w, &bad).unwrap();
    let msg = err_of(read_score_map(&p), &p);
    assert!(msg.contains("+inf") && msg.contains("y 1, x 2"), "{msg}");
    // no `value` dataset
    let p = d.path().join("other.h5");
    let f = hdf5::File::create(&p).unwrap();
    f.new_dataset_builder().with_data(&[1.0f32, 2.0]).create("scores").unwrap();
    drop(f);
    let msg = err_of(read_score_map(&p), &p);
    assert!(msg.contains("no `value` dataset") && msg.contains("scores"), "{msg}");
    // not HDF5 at all
    let p = d.path().join("junk.h5");
    write(&p, b"definitely not hdf5");
    err_of(read_score_map(&p), &p);
}

#[test]
fn mask_values_outside_the_mapping() {
    use bench::data::{LabelMap, label};
    let d = tmp();
    let lm = LabelMap::new(vec![1], vec![255]).unwrap();
    // 16-bit PNG: 0 normal, 1 anomaly, 255 void, 7 unlisted (in-distribution),
    // 256 and 65535 unlisted and above 255 (an error).
    let vals: [u16; 6] = [0, 1, 255, 7, 256, 65535];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    let p = d.path().join("m16.png");
    write(&p, &png_bytes(3, 2, png::ColorType::Grayscale, png::BitDepth::Sixteen, None, &bytes));
    let m = read_mask(&p).unwrap();
    assert_eq!(m.values, vals);
    let msg = err_of(lm.check(&m, &p), &p);
    assert!(msg.contains("mask value 256 at y 1, x 1") && msg.contains("`ignore`"), "{msg}");
    // Listing the values accepts them; unlisted 0..=255 values are in-distribution.
    let lm2 = LabelMap::new(vec![1, 256], vec![255, 65535]).unwrap();
    lm2.check(&m, &p).unwrap();
    assert_eq!(lm2.apply(&m), [label::NORMAL, 1, label::VOID, label::NORMAL, 2, label::VOID]);
    // An 8-bit mask never trips the check.
    let m8 = bench::data::Mask { h: 1, w: 3, values: vec![0, 200, 255] };
    lm.check(&m8, &p).unwrap();
    assert_eq!(lm.apply(&m8), [label::NORMAL, label::NORMAL, label::VOID]);
    // int64 .npy: values above 255 follow the same rule; negative values
    // (PyTorch's ignore_index = -1) cannot be listed and are a read error.
    let p = d.path().join("m64.npy");
    let data: Vec<u8> = [0i64, 1, 300, 255].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&p, &npy_bytes("<i8", false, "(2, 2)", &data));
    let m = read_mask_npy(&p).unwrap();
    let msg = err_of(lm.check(&m, &p), &p);
    assert!(msg.contains("mask value 300 at y 1, x 0"), "{msg}");
    let data: Vec<u8> = [0i64, 1, -1, 255].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&p, &npy_bytes("<i8", false, "(2, 2)", &data));
    let msg = err_of(read_mask_npy(&p), &p);
    assert!(msg.contains("-1") && msg.contains("0..=65535"), "{msg}");
}

/// Build `<root>/<split>/labels/<stem>.<ext>` files (tiny masks).
fn label(root: &Path, split: &str, file: &str) {
    let dir = root.join(split).join("labels");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(file);
    if file.ends_with(".png") {
        write_mask_png(&p, 2, 2, &[0, 1, 0, 255]).unwrap();
    } else {
        write_npy_u8(&p, &[2, 2], &[0, 1, 0, 255]).unwrap();
    }
}

fn logit(root: &Path, split: &str, model: &str, stem: &str) {
    let dir = root.join(split).join("logits").join(model);
    std::fs::create_dir_all(&dir).unwrap();
    write_npy_f32(&dir.join(format!("{stem}.npy")), &[2, 2, 2], &[0.0; 8]).unwrap();
}

#[test]
fn dataset_discovery() {
    let d = tmp();
    let root = d.path().join("ds");
    // Missing root.
    let msg = err_of(Dataset::open(&root), &root);
    assert!(msg.contains("does not exist"), "{msg}");
    for f in ["b.png", "a.npy", "c_10.png", "c_9.png", "B.png"] {
        label(&root, "test", f);
    }
    label(&root, "val", "x.png");
    std::fs::create_dir_all(root.join("notasplit")).unwrap();
    std::fs::write(root.join("README.md"), "hi").unwrap();
    for s in ["B", "a", "b", "c_10", "c_9"] {
        logit(&root, "test", "m1", s);
    }
    std::fs::create_dir_all(root.join("test/logits/m0")).unwrap();
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(
        ds.splits.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["test", "val"]
    );
    let t = ds.split("test").unwrap();
    assert!(ds.split("calibration").is_none());
    assert_eq!(t.stems, ["B", "a", "b", "c_10", "c_9"]);
    assert_eq!(t.labels[1], root.join("test/labels/a.npy"));
    assert_eq!(read_mask(&t.labels[1]).unwrap().values, vec![0, 1, 0, 255]);
    assert_eq!(t.models(), ["m0", "m1"]);
    t.check_model("m1").unwrap();
    assert_eq!(t.logits_path("m1", "b").unwrap(), root.join("test/logits/m1/b.npy"));

    // Missing model folder.
    let msg = format!("{:#}", t.check_model("nope").unwrap_err());
    assert!(msg.contains("nope"), "{msg}");
    // Missing logits file: names it.
    std::fs::remove_file(root.join("test/logits/m1/c_10.npy")).unwrap();
    let msg = format!("{:#}", t.check_model("m1").unwrap_err());
    assert!(msg.contains("c_10.npy"), "{msg}");
    let msg = format!("{:#}", t.logits_path("m1", "c_10").unwrap_err());
    assert!(msg.contains("c_10.npy"), "{msg}");
    logit(&root, "test", "m1", "c_10");
    // Extra logits file with no label.
    logit(&root, "test", "m1", "zzz");
    let msg = format!("{:#}", t.check_model("m1").unwrap_err());
    assert!(msg.contains("zzz.npy"), "{msg}");
    std::fs::remove_file(root.join("test/logits/m1/zzz.npy")).unwrap();
    t.check_model("m1").unwrap();
    // .npz logits are found like .npy; the same stem as both is an error.
    let (npy_b, npz_b) = (root.join("test/logits/m1/b.npy"), root.join("test/logits/m1/b.npz"));
    write_npz(&npz_b, &[("arr_0", std::fs::read(&npy_b).unwrap())], false).unwrap();
    let msg = format!("{:#}", t.check_model("m1").unwrap_err());
    assert!(msg.contains("b.npy") && msg.contains("b.npz") && msg.contains("two logits files"), "{msg}");
    std::fs::remove_file(&npy_b).unwrap();
    t.check_model("m1").unwrap();
    assert_eq!(t.logits_path("m1", "b").unwrap(), npz_b);
    // Score paths.
    assert!(t.score_path("ext", "a").is_err());
    std::fs::create_dir_all(root.join("test/scores/ext")).unwrap();
    write_npy_f32(&root.join("test/scores/ext/a.npy"), &[2, 2], &[0.0; 4]).unwrap();
    assert_eq!(t.score_path("ext", "a").unwrap(), root.join("test/scores/ext/a.npy"));

    // Duplicate stem with two extensions.
    label(&root, "test", "b.npy");
    let msg = format!("{:#}", Dataset::open(&root).unwrap_err());
    assert!(msg.contains("b.png") && msg.contains("b.npy"), "{msg}");
    std::fs::remove_file(root.join("test/labels/b.npy")).unwrap();
    // Empty split.
    std::fs::create_dir_all(root.join("calibration/labels")).unwrap();
    let msg = format!("{:#}", Dataset::open(&root).unwrap_err());
    assert!(msg.contains("empty split") && msg.contains("calibration"), "{msg}");
    std::fs::remove_dir_all(root.join("calibration")).unwrap();
    Dataset::open(&root).unwrap();
    // Unsupported label file type.
    std::fs::write(root.join("test/labels/q.jpg"), "x").unwrap();
    let msg = format!("{:#}", Dataset::open(&root).unwrap_err());
    assert!(msg.contains("q.jpg"), "{msg}");
    std::fs::remove_file(root.join("test/labels/q.jpg")).unwrap();
    // No test split.
    std::fs::rename(root.join("test"), root.join("tst")).unwrap();
    let msg = format!("{:#}", Dataset::open(&root).unwrap_err());
    assert!(msg.contains("test"), "{msg}");
}


/// AUROC of `scores` (higher = anomalous) with ties counted ½.
fn auroc(mut v: Vec<(f32, bool)>) -> f64 {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i, n) = (0f64, 0usize, v.len());
    let pos = v.iter().filter(|x| x.1).count() as f64;
    let neg = n as f64 - pos;
    while i < n {
        let mut j = i;
        while j < n && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        rank_sum += avg * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// SHA-256 over (relative path, length, bytes) of every file of the demo.
const DEMO_DIGEST: &str = "8434441a26e6b1d00a80076a656d01e84fb270e20bcad60d867914d95847d7e6";

#[test]
fn synth_is_deterministic_and_sane() {
    let d = tmp();
    let spec = SynthSpec::demo();
    let a = d.path().join("a");
    let b = d.path().join("sub/b");
    let t0 = std::time::Instant::now();
    generate(&a, &spec).unwrap();
    eprintln!("demo generated in {:?}", t0.elapsed());
    generate(&b, &spec).unwrap();
    let (ta, tb) = (tree(&a), tree(&b));
    assert_eq!(ta.len(), 30 * 4, "20 images + the 10 of test@lighting, each a mask, a photo and two models' logits");
    assert!(ta == tb, "synth output differs between runs");
    // Golden digest: the demo dataset must be byte-identical on every
    // machine (the committed demo results depend on it). Update only on an
    // intentional change to the generator.
    let digest = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (p, bytes) in &ta {
            h.update(p.to_str().unwrap().replace('\\', "/").as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    eprintln!("demo digest {digest}");
    assert_eq!(digest, DEMO_DIGEST, "demo dataset bytes changed");
    // Refuses to overwrite; no temp dirs left behind.
    let msg = format!("{:#}", generate(&a, &spec).unwrap_err());
    assert!(msg.contains("exists"), "{msg}");
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");

    let ds = Dataset::open(&a).unwrap();
    assert_eq!(
        ds.splits.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["calibration", "test", "test@lighting", "val"]
    );
    let count = |split: &str| -> (usize, usize, usize) {
        let s = ds.split(split).unwrap();
        let (mut an, mut void, mut tot) = (0, 0, 0);
        for l in &s.labels {
            let m = read_mask(l).unwrap();
            assert_eq!((m.h, m.w), (96, 128));
            assert!(m.values.iter().all(|&v| v == 0 || v == 1 || v == 255));
            an += m.values.iter().filter(|&&v| v == 1).count();
            void += m.values.iter().filter(|&&v| v == 255).count();
            tot += m.values.len();
        }
        (an, void, tot)
    };
    let (an, _, _) = count("calibration");
    assert_eq!(an, 0, "calibration must have no anomaly pixels");
    let (an, void, tot) = count("test");
    let frac = an as f64 / tot as f64;
    assert!((0.005..0.05).contains(&frac), "anomaly fraction {frac}");
    assert!(void as f64 / tot as f64 > 0.03, "void border");
    assert_eq!(ds.split("test").unwrap().stems[0], "img_0000");

    // Logits: dtypes, shapes, and max-logit AUROC in a plausible band with
    // the better model ahead.
    let test = ds.split("test").unwrap();
    let mut aucs = Vec::new();
    for (model, dtype) in [("deeplab_r50", "float32"), ("segformer_b5", "float16")] {
        test.check_model(model).unwrap();
        let mut pts = Vec::new();
        for (stem, lp) in test.stems.iter().zip(&test.labels) {
            let m = read_mask(lp).unwrap();
            let l = read_logits(&test.logits_path(model, stem).unwrap()).unwrap();
            assert_eq!((l.c, l.h, l.w, l.dtype()), (13, 96, 128, dtype));
            for p in 0..l.pixels() {
                if m.values[p] == 255 {
                    continue;
                }
                let mx = (0..l.c).map(|c| l.get(c, p)).fold(f64::MIN, f64::max);
                pts.push((-mx as f32, m.values[p] == 1));
            }
        }
        aucs.push(auroc(pts));
    }
    eprintln!("max-logit AUROC: {aucs:?}");
    assert!(
        (0.85..0.985).contains(&aucs[0]) && (0.80..0.97).contains(&aucs[1]),
        "{aucs:?}"
    );
    assert!(aucs[0] > aucs[1] + 0.02, "{aucs:?}");
}

/// Cross-check against numpy when `python3` with numpy is available (skipped
/// otherwise): numpy-written files (C/Fortran, f16, big-endian, int masks)
/// decode to numpy's values, and numpy loads our files.
#[test]
fn numpy_interop_when_available() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .output();
    if !matches!(ok, Ok(o) if o.status.success()) {
        eprintln!("skipping: python3 with numpy not available");
        return;
    }
    let d = tmp();
    let dir = d.path();
    let ours = dir.join("ours_f32.npy");
    let v = sample(3, 4, 5);
    write_npy_f32(&ours, &[3, 4, 5], &v).unwrap();
    let hv: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    write_npy_f16(&dir.join("ours_f16.npy"), &[3, 4, 5], &hv).unwrap();
    write_npy_u8(&dir.join("ours_u8.npy"), &[4, 5], &[7u8; 20]).unwrap();
    std::fs::write(
        dir.join("ours_ref.bin"),
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = r#"
import numpy as np, sys, os
d = sys.argv[1]
ref = np.fromfile(os.path.join(d, 'ours_ref.bin'), dtype='<f4').reshape(3, 4, 5)
a = np.load(os.path.join(d, 'ours_f32.npy')); assert a.dtype == np.float32 and a.shape == (3, 4, 5) and (a == ref).all()
b = np.load(os.path.join(d, 'ours_f16.npy')); assert b.dtype == np.float16 and (b == ref.astype(np.float16)).all()
c = np.load(os.path.join(d, 'ours_u8.npy')); assert c.dtype == np.uint8 and c.shape == (4, 5) and (c == 7).all()
rng = np.random.default_rng(0)
x = rng.normal(size=(4, 6, 7)).astype(np.float32)
x.tofile(os.path.join(d, 'x_ref.bin'))
np.save(os.path.join(d, 'np_c.npy'), x)
np.save(os.path.join(d, 'np_f.npy'), np.asfortranarray(x))
np.save(os.path.join(d, 'np_be.npy'), x.astype('>f4'))
np.save(os.path.join(d, 'np_f16f.npy'), np.asfortranarray(x.astype(np.float16)))
np.save(os.path.join(d, 'np_score.npy'), np.asfortranarray(x[0]))
np.save(os.path.join(d, 'np_m64.npy'), (np.arange(42).reshape(6, 7) * 1000).astype(np.int64))
np.save(os.path.join(d, 'np_m16.npy'), np.asfortranarray((np.arange(42).reshape(6, 7) * 1500).astype('>u2')))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "numpy side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x: Vec<f32> = std::fs::read(dir.join("x_ref.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for f in ["np_c.npy", "np_f.npy", "np_be.npy"] {
        let l = read_logits(&dir.join(f)).unwrap();
        assert_eq!((l.c, l.h, l.w), (4, 6, 7), "{f}");
        assert_eq!(f32s(&l), x, "{f}");
    }
    let l = read_logits(&dir.join("np_f16f.npy")).unwrap();
    let x16: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!((l.dtype(), f32s(&l)), ("float16", x16));
    assert_eq!(
        read_score_map(&dir.join("np_score.npy")).unwrap(),
        (6, 7, x[..42].to_vec())
    );
    let want: Vec<u16> = (0..42).map(|i| i * 1000).collect();
    assert_eq!(read_mask(&dir.join("np_m64.npy")).unwrap().values, want);
    let want: Vec<u16> = (0..42).map(|i| i * 1500).collect();
    assert_eq!(read_mask(&dir.join("np_m16.npy")).unwrap().values, want);
}

/// The logits' SHA-256 taken from the bytes of the read (one read per file
/// in a sweep; `PendingDigest::finish` on the logits returned) is the
/// file's own digest; where the buffer does not hold the bytes as on disk
/// (byte-swapped, Fortran order, an `.npz` member) the reader says `None`
/// and the caller hashes the file.
#[test]
fn hashed_read_digest_is_the_files_digest() {
    use bench::data::checksum::sha256_file;
    use bench::data::npy::read_logits_hashed;
    let d = tmp();
    let (c, h, w) = (3, 5, 7);
    let v = sample(c, h, w);
    // f32 and f16, several sizes (one larger than a parallel read chunk),
    // into a fresh buffer and into one of the other dtype
    let big = sample(4, 512, 640);
    for (name, shape, data) in [("small", [c as u64, h as u64, w as u64], &v), ("big", [4, 512, 640], &big)] {
        let p32 = d.path().join(format!("{name}32.npy"));
        write_npy_f32(&p32, &shape, data).unwrap();
        let p16 = d.path().join(format!("{name}16.npy"));
        write_npy_f16(&p16, &shape, &data.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>()).unwrap();
        let mut buf = bench::data::Logits::default();
        for p in [&p32, &p16, &p32] {
            let got = read_logits_hashed(p, None, &mut buf).unwrap().map(|d| d.finish(&buf));
            assert_eq!(got.as_deref(), Some(sha256_file(p).unwrap().as_str()), "{}", p.display());
            assert_eq!(buf.c * buf.h * buf.w, data.len());
        }
        assert_eq!(f32s(&buf), *data, "the last read (f32) into the reused buffer");
    }
    // big-endian and Fortran order decode as before, hashed by the caller
    let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
    let p = d.path().join("be.npy");
    write(&p, &npy_bytes(">f4", false, "(3, 5, 7)", &be));
    let mut buf = bench::data::Logits::default();
    assert!(read_logits_hashed(&p, None, &mut buf).unwrap().is_none());
    assert_eq!(f32s(&buf), v);
    let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let p = d.path().join("f.npy");
    write(&p, &npy_bytes("<f4", true, "(3, 5, 7)", &le));
    assert!(read_logits_hashed(&p, None, &mut buf).unwrap().is_none());
    // a truncated file is still an error naming it
    let p = d.path().join("cut.npy");
    let mut bytes = npy_bytes("<f4", false, "(3, 5, 7)", &le);
    bytes.truncate(bytes.len() - 5);
    write(&p, &bytes);
    err_of(read_logits_hashed(&p, None, &mut buf), &p);
}
