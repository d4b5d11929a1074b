//! Decoding strategies with transformers' `generate()` semantics, and the [`DecodePlan`] that
//! orders them.
//!
//! * greedy: arg-max of the (length-processed) logits; the first maximum wins on ties;
//! * beam search: transformers ≥ 4.50's vectorised beam search, step for step: `2·n`
//!   continuations kept per step, only the first `n` may finish, finished scores divided by
//!   `generated_length ^ length_penalty`, the "can a running beam still win" heuristic of
//!   `early_stopping=False` (or `"never"` / `True`), so the ids are the same;
//! * nucleus sampling: temperature, then top-k (transformers' default 50 unless set), then
//!   top-p over the softmax, then a draw from a ChaCha8 generator seeded per candidate. Torch's
//!   generator cannot be reproduced, so draws differ from Python's, but they are the same for
//!   the same seed on every run and machine.
//!
//! Lengths follow transformers 5: at most `max_new_tokens` tokens after the decoder input
//! (`[DEC]` and the prompt; default 20, the library default, capped by the decoder's position
//! table), and `[SEP]` is suppressed while the whole sequence is shorter than `min_length`
//! (default 0). The end token is `[SEP]`, which `generate()` substitutes for BLIP.

use std::fmt;

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{CaptionerError, Result};

/// transformers' `early_stopping` for beam search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum EarlyStopping {
    /// `False` (the default): stop when no running beam can beat the finished ones, judged
    /// at the current length.
    Heuristic,
    /// `True`: stop as soon as `num_beams` sequences have finished.
    AsSoonAsFull,
    /// `"never"`: judge with the longest possible length (the canonical beam search).
    Never,
}

/// One way of drawing a sentence.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Greedy,
    Beam {
        num_beams: usize,
        /// transformers' default 1.0.
        length_penalty: f32,
        early_stopping: EarlyStopping,
    },
    Nucleus {
        top_p: f32,
        temperature: f32,
        /// `None`: transformers' default top-k of 50; `Some(0)`: no top-k filter.
        top_k: Option<usize>,
    },
}

impl Strategy {
    pub fn beam(num_beams: usize) -> Self {
        Strategy::Beam {
            num_beams,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
        }
    }

    pub fn nucleus(top_p: f32, temperature: f32) -> Self {
        Strategy::Nucleus {
            top_p,
            temperature,
            top_k: None,
        }
    }

    /// Draws differ per seed.
    pub fn is_sampling(&self) -> bool {
        matches!(self, Strategy::Nucleus { .. })
    }

    /// The label of a draw, e.g. `greedy`, `beam 3`, `nucleus p=0.9 T=0.7 seed 12`.
    pub fn label(&self, seed: Option<u64>) -> String {
        match self {
            Strategy::Greedy => "greedy".into(),
            Strategy::Beam {
                num_beams,
                length_penalty,
                early_stopping,
            } => {
                let mut s = format!("beam {num_beams}");
                if *length_penalty != 1.0 {
                    s.push_str(&format!(" length_penalty={length_penalty}"));
                }
                match early_stopping {
                    EarlyStopping::Heuristic => {}
                    EarlyStopping::AsSoonAsFull => s.push_str(" early_stopping=true"),
                    EarlyStopping::Never => s.push_str(" early_stopping=never"),
                }
                s
            }
            Strategy::Nucleus {
                top_p,
                temperature,
                top_k,
            } => {
                let mut s = format!("nucleus p={top_p} T={temperature}");
                if let Some(k) = top_k {
                    s.push_str(&format!(" k={k}"));
                }
                if let Some(seed) = seed {
                    s.push_str(&format!(" seed {seed}"));
                }
                s
            }
        }
    }

    fn check(&self) -> Result<()> {
        match self {
            Strategy::Greedy => Ok(()),
            Strategy::Beam {
                num_beams,
                length_penalty,
                ..
            } => {
                if *num_beams < 1 {
                    return Err(CaptionerError::Setting(
                        "beam: num_beams must be at least 1".into(),
                    ));
                }
                if !length_penalty.is_finite() {
                    return Err(CaptionerError::Setting(
                        "beam: length_penalty must be a finite number".into(),
                    ));
                }
                Ok(())
            }
            Strategy::Nucleus {
                top_p, temperature, ..
            } => {
                if !(*top_p > 0.0 && *top_p <= 1.0) {
                    return Err(CaptionerError::Setting(format!(
                        "nucleus: top_p must be in (0, 1], got {top_p}"
                    )));
                }
                if !(*temperature > 0.0 && temperature.is_finite()) {
                    return Err(CaptionerError::Setting(format!(
                        "nucleus: temperature must be a positive number, got {temperature}"
                    )));
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label(None))
    }
}

/// The grammar of [`DecodePlan::parse`], for help texts and errors.
pub const PLAN_GRAMMAR: &str = "comma-separated steps: `greedy`, `beam:N[:LENGTH_PENALTY]`, \
`nucleus:TOP_P:TEMPERATURE[:TOP_K]` (e.g. `greedy,beam:3,nucleus:0.9:0.7`)";

/// The order in which candidates are drawn: each step of `steps` once per prompt of
/// `prompts` (step-major), then, for ever, the sampling steps again in turn, each time with
/// the next seed. A plan without sampling steps ends after its list.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodePlan {
    pub steps: Vec<Strategy>,
    /// Text prompts the decoder continues (`None`: no prompt). transformers keeps the prompt
    /// in the decoded sentence, and so does the captioner.
    pub prompts: Vec<Option<String>>,
    /// New tokens after `[DEC]` and the prompt (transformers' default 20).
    pub max_new_tokens: usize,
    /// `[SEP]` is suppressed while the sequence (with `[DEC]` and prompt) is shorter.
    pub min_length: usize,
}

impl Default for DecodePlan {
    /// greedy, beam 3, then nucleus sampling (p = 0.9) at temperatures 0.7, 1.0, 1.3, no
    /// prompt, transformers' lengths.
    fn default() -> Self {
        DecodePlan {
            steps: vec![
                Strategy::Greedy,
                Strategy::beam(3),
                Strategy::nucleus(0.9, 0.7),
                Strategy::nucleus(0.9, 1.0),
                Strategy::nucleus(0.9, 1.3),
            ],
            prompts: vec![None],
            max_new_tokens: 20,
            min_length: 0,
        }
    }
}

/// One draw of a plan: the strategy, the prompt and the seed for a sampling strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    pub strategy: Strategy,
    pub prompt: Option<String>,
    pub seed: Option<u64>,
}

impl Draw {
    /// `Candidate.decoding`: the strategy's label, then `, prompt "…"` when there is one.
    pub fn label(&self) -> String {
        let mut s = self.strategy.label(self.seed);
        if let Some(p) = &self.prompt {
            s.push_str(&format!(", prompt {p:?}"));
        }
        s
    }
}

impl DecodePlan {
    /// Parses [`PLAN_GRAMMAR`]; prompts and lengths keep their defaults.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |item: &str, why: &str| {
            CaptionerError::Setting(format!(
                "decode plan item `{item}`: {why}; expected {PLAN_GRAMMAR}"
            ))
        };
        let mut steps = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parts: Vec<&str> = item.split(':').map(str::trim).collect();
            let num = |i: usize, what: &str| -> Result<f32> {
                parts[i]
                    .parse::<f32>()
                    .map_err(|_| bad(item, &format!("{what} `{}` is not a number", parts[i])))
            };
            let step = match parts[0].to_ascii_lowercase().as_str() {
                "greedy" if parts.len() == 1 => Strategy::Greedy,
                "beam" if parts.len() == 2 || parts.len() == 3 => {
                    let n: usize = parts[1]
                        .parse()
                        .map_err(|_| bad(item, "the number of beams is not a whole number"))?;
                    let lp = if parts.len() == 3 {
                        num(2, "length penalty")?
                    } else {
                        1.0
                    };
                    Strategy::Beam {
                        num_beams: n,
                        length_penalty: lp,
                        early_stopping: EarlyStopping::Heuristic,
                    }
                }
                "nucleus" if parts.len() == 3 || parts.len() == 4 => {
                    let top_k = if parts.len() == 4 {
                        Some(
                            parts[3]
                                .parse::<usize>()
                                .map_err(|_| bad(item, "top-k is not a whole number"))?,
                        )
                    } else {
                        None
                    };
                    Strategy::Nucleus {
                        top_p: num(1, "top-p")?,
                        temperature: num(2, "temperature")?,
                        top_k,
                    }
                }
                "greedy" | "beam" | "nucleus" => {
                    return Err(bad(item, "wrong number of `:` fields"));
                }
                other => return Err(bad(item, &format!("unknown strategy `{other}`"))),
            };
            step.check().map_err(|e| bad(item, &e.to_string()))?;
            steps.push(step);
        }
        if steps.is_empty() {
            return Err(CaptionerError::Setting(format!(
                "the decode plan is empty; expected {PLAN_GRAMMAR}"
            )));
        }
        Ok(DecodePlan {
            steps,
            ..DecodePlan::default()
        })
    }

    /// The same plan with these prompts (each step is drawn once per prompt, in this order).
    pub fn with_prompts(mut self, prompts: Vec<Option<String>>) -> Self {
        self.prompts = if prompts.is_empty() {
            vec![None]
        } else {
            prompts
        };
        self
    }

    pub fn check(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(CaptionerError::Setting(format!(
                "the decode plan is empty; expected {PLAN_GRAMMAR}"
            )));
        }
        if self.max_new_tokens == 0 {
            return Err(CaptionerError::Setting(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        self.steps.iter().try_for_each(Strategy::check)
    }

    /// The `index`-th draw (0-based) for an image drawn with `seed`, or `None` past the end
    /// of a plan without sampling steps. Sampling draws use seed `seed + index` (wrapping).
    pub fn draw(&self, index: usize, seed: u64) -> Option<Draw> {
        let prompts = if self.prompts.is_empty() {
            &[None][..]
        } else {
            &self.prompts[..]
        };
        let np = prompts.len();
        let first = self.steps.len() * np;
        let (strategy, prompt) = if index < first {
            (&self.steps[index / np], &prompts[index % np])
        } else {
            let sampling: Vec<&Strategy> = self.steps.iter().filter(|s| s.is_sampling()).collect();
            if sampling.is_empty() {
                return None;
            }
            let k = index - first;
            (sampling[(k / np) % sampling.len()], &prompts[k % np])
        };
        Some(Draw {
            strategy: strategy.clone(),
            prompt: prompt.clone(),
            seed: strategy
                .is_sampling()
                .then(|| seed.wrapping_add(index as u64)),
        })
    }
}

/// A decoder the strategies drive: logits for the next token of each running sequence.
pub trait StepModel {
    /// Runs the decoder input (`[DEC]` + prompt) and returns the logits of its last position.
    fn start(&mut self, input: &[u32]) -> Result<Vec<f32>>;
    /// Makes `rows.len()` running sequences, row `i` continuing the sequence that was row
    /// `rows[i]` (the start counts as one row), then appends `tokens[i]` to row `i` and
    /// returns the next logits of every row.
    fn step(&mut self, rows: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>>;
}

/// Length limits and end token of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total length (input + new tokens) at which generation stops.
    pub max_length: usize,
    pub min_length: usize,
    pub eos: u32,
}

fn apply_min_length(scores: &mut [f32], len: usize, lim: &Limits) {
    if len < lim.min_length {
        if let Some(s) = scores.get_mut(lim.eos as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax` in f32 as torch computes it (`x − max − log Σ exp(x − max)`).
fn log_softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f32 = v.iter().map(|&x| (x - m).exp()).sum();
    let ls = s.ln();
    v.iter().map(|&x| x - m - ls).collect()
}

/// Greedy decoding: the full sequence (input, new tokens, the end token if reached).
pub fn greedy(model: &mut dyn StepModel, input: &[u32], lim: &Limits) -> Result<Vec<u32>> {
    let mut seq = input.to_vec();
    let mut logits = model.start(input)?;
    while seq.len() < lim.max_length {
        apply_min_length(&mut logits, seq.len(), lim);
        let t = argmax(&logits);
        seq.push(t);
        if t == lim.eos || seq.len() >= lim.max_length {
            break;
        }
        logits = model.step(&[0], &[t])?.remove(0);
    }
    Ok(seq)
}

/// Nucleus sampling with the given generator.
pub fn sample(
    model: &mut dyn StepModel,
    input: &[u32],
    lim: &Limits,
    top_p: f32,
    temperature: f32,
    top_k: Option<usize>,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<u32>> {
    let mut seq = input.to_vec();
    let mut logits = model.start(input)?;
    let top_k = top_k.unwrap_or(50);
    while seq.len() < lim.max_length {
        apply_min_length(&mut logits, seq.len(), lim);
        let t = draw_token(&logits, top_p, temperature, top_k, rng);
        seq.push(t);
        if t == lim.eos || seq.len() >= lim.max_length {
            break;
        }
        logits = model.step(&[0], &[t])?.remove(0);
    }
    Ok(seq)
}

/// transformers' temperature → top-k → top-p warpers, softmax, one draw.
fn draw_token(
    logits: &[f32],
    top_p: f32,
    temperature: f32,
    top_k: usize,
    rng: &mut ChaCha8Rng,
) -> u32 {
    let mut s: Vec<f32> = logits.iter().map(|&x| x / temperature).collect();
    let n = s.len();
    if top_k > 0 && top_k < n {
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[top_k - 1];
        for x in s.iter_mut() {
            if *x < kth {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    if top_p < 1.0 {
        // ascending order; drop the low tail whose cumulative probability is ≤ 1 − p,
        // always keeping the most likely token
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
        let sorted: Vec<f32> = order.iter().map(|&i| s[i]).collect();
        let probs = softmax(&sorted);
        let mut cum = 0.0f32;
        let mut remove = Vec::new();
        for (r, &p) in probs.iter().enumerate() {
            cum += p;
            if cum <= 1.0 - top_p && r + 1 < n {
                remove.push(order[r]);
            }
        }
        for i in remove {
            s[i] = f32::NEG_INFINITY;
        }
    }
    let probs = softmax(&s);
    let u: f64 = rng.gen::<f64>();
    let mut acc = 0.0f64;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p as f64;
            last = i;
            if u < acc {
                return i as u32;
            }
        }
    }
    last as u32
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|&x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// A ChaCha8 generator for a draw seed.
pub fn rng_for(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[derive(Clone)]
struct Finished {
    seq: Vec<u32>,
    score: f32,
    done: bool,
}

/// Indices of `v` by value, highest first; equal values keep index order.
fn top_indices(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Beam search as transformers' `_beam_search` for one sequence; returns the best
/// finished sequence.
pub fn beam_search(
    model: &mut dyn StepModel,
    input: &[u32],
    lim: &Limits,
    num_beams: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
) -> Result<Vec<u32>> {
    let n = num_beams.max(1);
    let keep = 2 * n; // max(2, 1 + number of end tokens) · n
    let prompt_len = input.len();
    let mut cur_len = prompt_len;
    let mut running: Vec<Vec<u32>> = vec![input.to_vec(); n];
    let mut running_scores = vec![-1.0e9f32; n];
    running_scores[0] = 0.0;
    let mut finished = vec![
        Finished {
            seq: input.to_vec(),
            score: -1.0e9,
            done: false
        };
        n
    ];
    let mut unsatisfied = true;
    // After the start the model holds one row; the n beams are copies of it.
    let mut started = false;
    let first = model.start(input)?;
    let mut logits: Vec<Vec<f32>> = vec![first; n];
    if cur_len >= lim.max_length {
        return Ok(input.to_vec());
    }
    loop {
        let vocab = logits[0].len();
        let mut acc = Vec::with_capacity(n * vocab);
        for (b, l) in logits.iter().enumerate() {
            let mut lp = log_softmax(l);
            apply_min_length(&mut lp, cur_len, lim);
            acc.extend(lp.into_iter().map(|x| x + running_scores[b]));
        }
        let top = top_indices(&acc, keep);
        let cand: Vec<(usize, u32, f32)> = top
            .iter()
            .map(|&i| (i / vocab, (i % vocab) as u32, acc[i]))
            .collect();
        let hits: Vec<bool> = cand
            .iter()
            .map(|&(_, t, _)| t == lim.eos || cur_len + 1 >= lim.max_length)
            .collect();
        // running beams for the next step: the best n that did not finish
        let run_scores: Vec<f32> = cand
            .iter()
            .zip(&hits)
            .map(|(&(_, _, s), &h)| s + if h { -1.0e9 } else { 0.0 })
            .collect();
        let next = top_indices(&run_scores, n);
        // finished beams: merge the new ones (only among the first n candidates)
        let denom = ((cur_len + 1 - prompt_len) as f64).powf(length_penalty as f64) as f32;
        let all_done = finished.iter().all(|f| f.done);
        let full = all_done && early_stopping == EarlyStopping::AsSoonAsFull;
        let mut merged: Vec<Finished> = finished.clone();
        for (k, &(b, t, s)) in cand.iter().enumerate() {
            let did = hits[k] && k < n;
            let mut score = s / denom;
            if full {
                score += -1.0e9;
            }
            if !unsatisfied {
                score += -1.0e9;
            }
            if !did {
                score += -1.0e9;
            }
            let mut seq = running[b].clone();
            seq.push(t);
            merged.push(Finished {
                seq,
                score,
                done: did,
            });
        }
        let merged_scores: Vec<f32> = merged.iter().map(|f| f.score).collect();
        finished = top_indices(&merged_scores, n)
            .into_iter()
            .map(|i| merged[i].clone())
            .collect();
        let rows: Vec<usize> = next
            .iter()
            .map(|&k| if started { cand[k].0 } else { 0 })
            .collect();
        started = true;
        let tokens: Vec<u32> = next.iter().map(|&k| cand[k].1).collect();
        running = next
            .iter()
            .map(|&k| {
                let mut s = running[cand[k].0].clone();
                s.push(cand[k].1);
                s
            })
            .collect();
        running_scores = next.iter().map(|&k| run_scores[k]).collect();
        cur_len += 1;
        // can a running beam still beat the worst finished one?
        let best_len = if early_stopping == EarlyStopping::Never && length_penalty > 0.0 {
            lim.max_length - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_possible =
            running_scores[0] / (best_len as f64).powf(length_penalty as f64) as f32;
        let worst = finished
            .iter()
            .map(|f| f.score)
            .fold(f32::INFINITY, f32::min);
        let improvable = finished
            .iter()
            .any(|f| best_possible > if f.done { worst } else { -1.0e9 });
        unsatisfied = unsatisfied && improvable;
        let all_done = finished.iter().all(|f| f.done);
        let open = !(all_done && early_stopping == EarlyStopping::AsSoonAsFull);
        let continuable = !hits.iter().all(|&h| h);
        if !(unsatisfied && open && continuable) {
            break;
        }
        logits = model.step(&rows, &tokens)?;
    }
    Ok(finished.swap_remove(0).seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_draws_greedy_beam_then_cycles_the_samplers() {
        let p = DecodePlan::default();
        let labels: Vec<String> = (0..8).map(|i| p.draw(i, 10).unwrap().label()).collect();
        assert_eq!(
            labels,
            [
                "greedy",
                "beam 3",
                "nucleus p=0.9 T=0.7 seed 12",
                "nucleus p=0.9 T=1 seed 13",
                "nucleus p=0.9 T=1.3 seed 14",
                "nucleus p=0.9 T=0.7 seed 15",
                "nucleus p=0.9 T=1 seed 16",
                "nucleus p=0.9 T=1.3 seed 17",
            ]
        );
    }

    #[test]
    fn a_plan_without_sampling_ends() {
        let p = DecodePlan::parse("greedy, beam:2").unwrap();
        assert!(p.draw(1, 0).is_some());
        assert!(p.draw(2, 0).is_none());
    }

    #[test]
    fn parse_rejects_bad_items_naming_them() {
        for bad in [
            "",
            "greedy,topk:3",
            "beam",
            "beam:x",
            "nucleus:1.5:0.7",
            "nucleus:0.9:0",
        ] {
            let e = DecodePlan::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected comma-separated steps"), "{bad}: {e}");
        }
        let e = DecodePlan::parse("greedy,topk:3").unwrap_err().to_string();
        assert!(e.contains("`topk:3`"), "{e}");
    }

    #[test]
    fn top_p_keeps_the_smallest_set_over_p() {
        // probabilities 0.5, 0.3, 0.2: p = 0.75 keeps the first two (tail 0.2 ≤ 0.25)
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut rng = rng_for(1);
        let mut seen = [0usize; 3];
        for _ in 0..2000 {
            seen[draw_token(&logits, 0.75, 1.0, 0, &mut rng) as usize] += 1;
        }
        assert_eq!(seen[2], 0);
        assert!(seen[0] > seen[1] && seen[1] > 0, "{seen:?}");
    }
}
