//! Dataset statistics as reported in the paper's section 4.1: number of captions, words,
//! sentences, sentences and relations per caption, the longest caption.

use serde::Serialize;

use crate::dataset::MetadataRecord;
use crate::extract::analyze;
use crate::knowledge::Knowledge;
use crate::text::{count_words, split_sentences};

/// Which text of a record is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsField {
    /// The hierarchical caption: words and characters over scene + relation + elements;
    /// sentences and relations over the relation text.
    #[default]
    Hierarchical,
    /// Only the relation text.
    Relation,
    /// The traditional flat caption (`text`).
    Text,
}

/// The statistics of a set of records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetStats {
    pub captions: usize,
    pub words: usize,
    pub characters: usize,
    pub sentences: usize,
    pub relations: usize,
    pub mean_words: f64,
    pub mean_characters: f64,
    pub mean_sentences: f64,
    pub max_sentences: usize,
    pub mean_relations: f64,
    pub longest_words: usize,
    pub longest_characters: usize,
    /// File name of the longest caption (by words; the first on ties).
    pub longest_file: Option<String>,
    pub scenes: std::collections::BTreeMap<String, usize>,
    pub train: usize,
    pub test: usize,
    /// Captions holding no SRKC relation.
    pub without_relation: usize,
}

fn measured(r: &MetadataRecord, field: StatsField) -> (String, String) {
    match field {
        StatsField::Hierarchical => {
            let all = [
                r.scene.as_str(),
                r.relation.as_str(),
                &r.elements.join(", "),
            ]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
            (all, r.relation.clone())
        }
        StatsField::Relation => (r.relation.clone(), r.relation.clone()),
        StatsField::Text => (r.text.clone(), r.text.clone()),
    }
}

impl DatasetStats {
    pub fn compute(k: &Knowledge, records: &[MetadataRecord], field: StatsField) -> DatasetStats {
        let mut s = DatasetStats {
            captions: records.len(),
            words: 0,
            characters: 0,
            sentences: 0,
            relations: 0,
            mean_words: 0.0,
            mean_characters: 0.0,
            mean_sentences: 0.0,
            max_sentences: 0,
            mean_relations: 0.0,
            longest_words: 0,
            longest_characters: 0,
            longest_file: None,
            scenes: Default::default(),
            train: 0,
            test: 0,
            without_relation: 0,
        };
        for r in records {
            let (all, sentence_text) = measured(r, field);
            let w = count_words(&all);
            let c = all.chars().count();
            let sents = split_sentences(&sentence_text);
            let rels: usize = sents.iter().map(|x| analyze(k, x).relations.len()).sum();
            s.words += w;
            s.characters += c;
            s.sentences += sents.len();
            s.max_sentences = s.max_sentences.max(sents.len());
            s.relations += rels;
            if rels == 0 {
                s.without_relation += 1;
            }
            if w > s.longest_words || s.longest_file.is_none() {
                s.longest_words = w;
                s.longest_characters = c;
                s.longest_file = Some(r.file_name.clone());
            }
            *s.scenes.entry(r.scene.clone()).or_default() += 1;
            match r.split {
                Some(crate::dataset::Split::Train) => s.train += 1,
                Some(crate::dataset::Split::Test) => s.test += 1,
                None => {}
            }
        }
        if s.captions > 0 {
            let n = s.captions as f64;
            s.mean_words = s.words as f64 / n;
            s.mean_characters = s.characters as f64 / n;
            s.mean_sentences = s.sentences as f64 / n;
            s.mean_relations = s.relations as f64 / n;
        }
        s
    }

    /// The paper's 4.1 sentence, with our numbers.
    pub fn summary(&self) -> String {
        format!(
            "{} captions, {} words, {} sentences. Average caption length {:.2} words (approx. {:.2} characters); the longest caption has {} words (approx. {} characters). Captions have at most {} sentences, on average {:.2} sentences and {:.2} spatial relations.",
            self.captions,
            self.words,
            self.sentences,
            self.mean_words,
            self.mean_characters,
            self.longest_words,
            self.longest_characters,
            self.max_sentences,
            self.mean_sentences,
            self.mean_relations
        )
    }
}
