//! Scratch: within/between speaker cosine of CAM++ embeddings over truth turns.
use sentistream::diarize::{
    campp::CamPlus,
    fbank::{Fbank, N_BINS},
};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let net = CamPlus::load(std::path::Path::new(&a[1])).unwrap();
    let audio = sentistream::source::decode_all(std::path::Path::new(&a[2]), &Default::default())
        .unwrap()
        .0;
    let text = std::fs::read_to_string(&a[3]).unwrap();
    let turns = if a[3].ends_with(".rttm") {
        sentistream::diarize::score::read_rttm(&text).unwrap()
    } else {
        sentistream::diarize::score::read_turns_json(&text).unwrap()
    };
    let seg: f64 = a.get(4).map_or(1.5, |s| s.parse().unwrap());
    let mut fb = Fbank::new();
    let mut f = Vec::new();
    let mut embs = Vec::new();
    for t in &turns {
        if t.end - t.start < seg {
            continue;
        }
        let mid = (t.start + t.end) / 2.0;
        let x =
            &audio[((mid - seg / 2.0) * 16000.0) as usize..((mid + seg / 2.0) * 16000.0) as usize];
        fb.compute(x, &mut f);
        let n = f.len() / N_BINS;
        let mut e: Vec<f32> = Vec::try_from(
            net.embed(&tch::Tensor::from_slice(&f).reshape([1, n as i64, 80]))
                .flatten(0, -1),
        )
        .unwrap();
        sentistream::diarize::registry::normalize(&mut e);
        embs.push((t.speaker.clone(), e));
    }
    let (mut w, mut b) = (Vec::new(), Vec::new());
    for i in 0..embs.len() {
        for j in i + 1..embs.len() {
            let c: f32 = embs[i].1.iter().zip(&embs[j].1).map(|(x, y)| x * y).sum();
            if embs[i].0 == embs[j].0 {
                w.push(c)
            } else {
                b.push(c)
            }
        }
    }
    let st = |v: &mut Vec<f32>| {
        v.sort_by(|a, b| a.total_cmp(b));
        let m = v.iter().sum::<f32>() / v.len() as f32;
        format!(
            "n {} mean {m:.3} min {:.3} p10 {:.3} p90 {:.3} max {:.3}",
            v.len(),
            v[0],
            v[v.len() / 10],
            v[v.len() * 9 / 10],
            v[v.len() - 1]
        )
    };
    println!("within  {}", st(&mut w));
    println!("between {}", st(&mut b));
}
