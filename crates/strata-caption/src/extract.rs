//! Relation, vertical-relation and element extraction from one sentence.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::knowledge::{Knowledge, PhraseKind};
use crate::text::{tokenize, Token, TokenKind};

/// An element named in a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementMention {
    /// Canonical lexicon name, e.g. `car`.
    pub element: String,
    /// The words as written, e.g. `Cars`.
    pub surface: String,
    /// Byte span in the sentence.
    pub span: Range<usize>,
}

/// An SRKC relation found in a sentence.
///
/// `subject` is the nearest element before the phrase and `object` the first element after
/// it, both within the clause (they are `None` when the sentence does not name one).
/// They follow the sentence order; `passive` says the phrase swaps the roles ("a pond
/// surrounded by trees": subject pond, object trees, passive, i.e. trees surround the pond).
/// [`RelationMention::agent`] and [`RelationMention::patient`] give the semantic order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationMention {
    /// Canonical relation id, e.g. `surrounds`.
    pub relation: String,
    /// The matched words as written, e.g. `surrounded by`.
    pub phrase: String,
    /// Byte span of the phrase in the sentence.
    pub span: Range<usize>,
    pub passive: bool,
    pub subject: Option<ElementMention>,
    pub object: Option<ElementMention>,
    /// The second object of a two-object relation ("between A and B").
    pub object2: Option<ElementMention>,
    /// Set when a vertical word was accepted through a `[[vertical_exception]]`
    /// ("a bridge over a river").
    pub via_exception: bool,
}

impl RelationMention {
    /// The element doing the relating ("trees" in both "trees surround the pond" and "a
    /// pond surrounded by trees").
    pub fn agent(&self) -> Option<&ElementMention> {
        if self.passive {
            self.object.as_ref()
        } else {
            self.subject.as_ref()
        }
    }

    /// The element related to ("pond" in the examples above).
    pub fn patient(&self) -> Option<&ElementMention> {
        if self.passive {
            self.subject.as_ref()
        } else {
            self.object.as_ref()
        }
    }
}

/// A nadir-impossible (vertical) relation found in a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerticalMention {
    pub phrase: String,
    pub span: Range<usize>,
    pub subject: Option<ElementMention>,
    pub object: Option<ElementMention>,
}

/// Everything found in one sentence.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Analysis {
    pub elements: Vec<ElementMention>,
    pub relations: Vec<RelationMention>,
    pub vertical: Vec<VerticalMention>,
}

impl Analysis {
    /// The golden-rule test: at least one SRKC relation and no vertical relation.
    pub fn passes_golden_rule(&self) -> bool {
        !self.relations.is_empty() && self.vertical.is_empty()
    }

    /// Distinct canonical elements in order of first mention.
    pub fn element_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.elements {
            if !out.contains(&e.element) {
                out.push(e.element.clone());
            }
        }
        out
    }
}

/// Which SRKC relations a sentence states, where, and between which elements.
pub fn extract_relations(k: &Knowledge, sentence: &str) -> Vec<RelationMention> {
    analyze(k, sentence).relations
}

/// The lexicon elements a text names, in order (every mention).
pub fn find_elements(k: &Knowledge, text: &str) -> Vec<ElementMention> {
    analyze(k, text).elements
}

/// The vertical relations a text states (exceptions such as "bridge over a river" are not
/// vertical).
pub fn find_vertical(k: &Knowledge, text: &str) -> Vec<VerticalMention> {
    analyze(k, text).vertical
}

#[derive(Debug, Clone)]
enum Item {
    Element(usize),
    Relation(usize, bool),
    Vertical,
    /// A clause or sentence boundary.
    Boundary,
    /// "and" / "&": joins the two objects of "between".
    And,
    /// A `[clauses] object_stops` word: the object search ends here.
    ObjectStop,
    Other,
}

struct Piece {
    item: Item,
    span: Range<usize>,
}

/// Full analysis of a sentence (or a short text: sentence marks act as clause boundaries).
pub fn analyze(k: &Knowledge, sentence: &str) -> Analysis {
    let tokens = tokenize(sentence);
    let pieces = pieces(k, sentence, &tokens);
    let mention = |p: &Piece| -> Option<ElementMention> {
        match p.item {
            Item::Element(i) => Some(ElementMention {
                element: k.elements[i].name.clone(),
                surface: sentence[p.span.clone()].to_string(),
                span: p.span.clone(),
            }),
            _ => None,
        }
    };
    let mut out = Analysis::default();
    for (pi, p) in pieces.iter().enumerate() {
        match p.item {
            Item::Element(_) => out.elements.push(mention(p).expect("element piece")),
            Item::Relation(..) | Item::Vertical => {
                let subject = pieces[..pi]
                    .iter()
                    .rev()
                    .take_while(|q| !matches!(q.item, Item::Boundary))
                    .find_map(mention);
                let mut object = None;
                let mut object_at = pi;
                for (qi, q) in pieces.iter().enumerate().skip(pi + 1) {
                    match q.item {
                        Item::Boundary | Item::Relation(..) | Item::Vertical | Item::ObjectStop => {
                            break
                        }
                        Item::Element(_) => {
                            object = mention(q);
                            object_at = qi;
                            break;
                        }
                        _ => {}
                    }
                }
                let phrase = sentence[p.span.clone()].to_string();
                match p.item {
                    Item::Relation(ri, passive) => {
                        let def = &k.relations[ri];
                        let object2 = if def.two_objects && object.is_some() {
                            second_object(&pieces[object_at + 1..], &mention)
                        } else {
                            None
                        };
                        out.relations.push(RelationMention {
                            relation: def.id.clone(),
                            phrase,
                            span: p.span.clone(),
                            passive,
                            subject,
                            object,
                            object2,
                            via_exception: false,
                        });
                    }
                    _ => {
                        let key = phrase.to_lowercase();
                        let key = crate::text::phrase_words(&key).join(" ");
                        let exception = k.exceptions.iter().find(|x| {
                            x.phrases.contains(&key)
                                && subject
                                    .as_ref()
                                    .is_some_and(|s| x.subjects.contains(&s.element))
                                && object
                                    .as_ref()
                                    .is_some_and(|o| x.objects.contains(&o.element))
                        });
                        match exception {
                            Some(x) => out.relations.push(RelationMention {
                                relation: x.relation.clone(),
                                phrase,
                                span: p.span.clone(),
                                passive: x.passive,
                                subject,
                                object,
                                object2: None,
                                via_exception: true,
                            }),
                            None => out.vertical.push(VerticalMention {
                                phrase,
                                span: p.span.clone(),
                                subject,
                                object,
                            }),
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn second_object(
    rest: &[Piece],
    mention: &dyn Fn(&Piece) -> Option<ElementMention>,
) -> Option<ElementMention> {
    let mut seen_and = false;
    for q in rest {
        match q.item {
            Item::Boundary | Item::Relation(..) | Item::Vertical | Item::ObjectStop => return None,
            Item::And => seen_and = true,
            Item::Element(_) if seen_and => return mention(q),
            _ => {}
        }
    }
    None
}

/// Groups tokens into pieces: relation/vertical phrases, element phrases (longest match at
/// each word, relations win ties), clause boundaries and other words.
fn pieces(k: &Knowledge, s: &str, tokens: &[Token]) -> Vec<Piece> {
    let _ = s;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if let TokenKind::Punct(c) = t.kind {
            let boundary = matches!(c, '.' | '!' | '?') || k.clause_punctuation.contains(&c);
            out.push(Piece {
                item: if boundary {
                    Item::Boundary
                } else if c == '&' {
                    Item::And
                } else {
                    Item::Other
                },
                span: t.span.clone(),
            });
            i += 1;
            continue;
        }
        // The run of consecutive words starting here.
        let run: Vec<&str> = tokens[i..]
            .iter()
            .take_while(|t| t.kind == TokenKind::Word)
            .map(|t| t.text.as_str())
            .collect();
        let rel = k.relation_table.longest_at(&run);
        let el = k.element_table.longest_at(&run);
        let (len, item) = match (rel, el) {
            (Some((rl, rk)), Some((el, ei))) => {
                if el > rl {
                    (el, Item::Element(ei))
                } else {
                    (rl, kind_item(rk))
                }
            }
            (Some((rl, rk)), None) => (rl, kind_item(rk)),
            (None, Some((el, ei))) => (el, Item::Element(ei)),
            (None, None) => {
                let item = if k.clause_word_table.longest_at(&run).is_some() {
                    Item::Boundary
                } else if run[0] == "and" {
                    Item::And
                } else if k.object_stops.iter().any(|w| w == run[0]) {
                    Item::ObjectStop
                } else {
                    Item::Other
                };
                (1, item)
            }
        };
        out.push(Piece {
            item,
            span: tokens[i].span.start..tokens[i + len - 1].span.end,
        });
        i += len;
    }
    out
}

fn kind_item(k: PhraseKind) -> Item {
    match k {
        PhraseKind::Relation(i, p) => Item::Relation(i, p),
        PhraseKind::Vertical => Item::Vertical,
    }
}

/// Byte ranges of the clauses of a sentence: they end after a clause punctuation mark or
/// sentence mark, and before a `[clauses] words` phrase. The ranges tile the sentence.
pub fn clause_ranges(k: &Knowledge, sentence: &str) -> Vec<Range<usize>> {
    let tokens = tokenize(sentence);
    let mut cuts = vec![0];
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match t.kind {
            TokenKind::Punct(c)
                if k.clause_punctuation.contains(&c) || matches!(c, '.' | '!' | '?') =>
            {
                cuts.push(t.span.end);
                i += 1;
            }
            TokenKind::Word => {
                let run: Vec<&str> = tokens[i..]
                    .iter()
                    .take_while(|t| t.kind == TokenKind::Word)
                    .map(|t| t.text.as_str())
                    .collect();
                if let Some((len, ())) = k.clause_word_table.longest_at(&run) {
                    cuts.push(t.span.start);
                    i += len;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    cuts.push(sentence.len());
    cuts.dedup();
    cuts.windows(2)
        .map(|w| w[0]..w[1])
        .filter(|r| !r.is_empty())
        .collect()
}
