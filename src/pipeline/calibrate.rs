//! The SML / HEAT / KL-matching fit on the calibration split: per-image
//! sums (pass 1; KL matching's own accumulator beside SML/HEAT's), then for
//! HEAT the energy moments (pass 2), each a collective.

use super::*;

/// Fit SML / HEAT statistics for one model on `split`: pass 1 (per-image
/// sums), then for HEAT pass 2 (energy moments), each a collective.
pub(crate) fn calibrate(cx: &Ctx, split: &Split, leakage: bool, heat: bool, kl: bool, features: bool, model: &str) -> Result<Calibration> {
    use crate::scores::calib::{EnergyMoments, Sums, first_normal, image_sums};
    use crate::scores::kl::KlSums;
    // HEAT on per-pixel features: this image's features, else None.
    let feat_of = |i: usize, lg: &Logits| -> Result<Option<Logits>> {
        if features { Ok(Some(load_features(split, model, i, lg, cx.inp)?)) } else { Ok(None) }
    };
    let (inp, bar, n) = (cx.inp, cx.progress, split.stems.len());
    let label = |step: usize| format!("[{}] calibrate ({}) pass {step}/{}", cx.who(model), split.name, 1 + heat as usize);
    let pass = |step: &str| format!("{}{model}.{}.{step}", cx.tag, split.name);
    let ctx = |i: usize| format!("{}/{} [{model}]", split.name, split.stems[i]);
    // (shift of the HEAT sums, per-image sums, KL matching's per-image sums)
    type Cal1 = (Option<Vec<f64>>, Vec<Sums>, Vec<KlSums>);
    let mut st: Cal1 = (None, vec![], vec![]);
    cx.collective(
        PassKind::Calibrate(1),
        label(1),
        &pass("cal1"),
        n,
        &mut st,
        |st, images| {
            // The shift: the split's first in-distribution pixel, whichever
            // images this process visits. A range from image 0 finds it on
            // the way (images before it have no in-distribution pixel, so
            // their sums do not depend on the shift); a shard's later range
            // scans from image 0 first (the scan stops at the first image
            // that has one).
            let on_the_way = heat && images.start == 0;
            if heat && !on_the_way {
                st.0 = find_image(split, model, inp, 0..n, |i, lg, lab| Ok(first_normal(lg, feat_of(i, lg)?.as_ref(), &lab)))?;
            }
            for_each_image(split, model, inp, images, |i, lg, lab| {
                if let Some(f) = st.1.first().map(|s| s.classes())
                    && f != lg.c
                {
                    bail!("{}: {} classes, but earlier calibration images have {f}", ctx(i), lg.c);
                }
                let feat = feat_of(i, lg)?;
                if on_the_way && st.0.is_none() {
                    st.0 = first_normal(lg, feat.as_ref(), &lab);
                }
                let shift = st.0.as_deref().unwrap_or_default();
                st.1.push(image_sums(lg, feat.as_ref(), &lab, heat, shift));
                if kl {
                    st.2.push(crate::scores::kl::image_sums(lg, &lab));
                }
                bar.inc();
                Ok(())
            })
        },
        |st| st.clone(),
        |st, d: Cal1| {
            if d.0.is_some() {
                st.0 = d.0;
            }
            st.1.extend(d.1);
            st.2.extend(d.2);
            Ok(())
        },
    )?;
    let mut cal = Calibration::from_sums(&split.name, leakage, heat, &st.1, st.0.as_deref().unwrap_or(&[]))
        .with_context(|| format!("model {model}"))?;
    if kl {
        cal.kl = Some(crate::scores::kl::fit(&st.2, &split.name, &mut cal.warnings)?);
    }
    if heat {
        let mut em: Vec<EnergyMoments> = vec![];
        cx.collective(
            PassKind::Calibrate(2),
            label(2),
            &pass("cal2"),
            n,
            &mut em,
            |em, images| {
                for_each_image(split, model, inp, images, |i, lg, lab| {
                    em.push(cal.energy_moments(lg, feat_of(i, lg)?.as_ref(), &lab));
                    bar.inc();
                    Ok(())
                })
            },
            |em| em.clone(),
            |em, d: Vec<EnergyMoments>| {
                em.extend(d);
                Ok(())
            },
        )?;
        cal.standardise(&em);
    }
    Ok(cal)
}
