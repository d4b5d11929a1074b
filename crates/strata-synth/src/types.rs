//! The shared vocabulary: mask classes (elements), scene concepts and relation ids.

use serde::{Deserialize, Serialize};

use crate::error::SynthError;

macro_rules! elements {
    ($($var:ident = $id:expr, $name:expr, $plural:expr, [$r:expr, $g:expr, $b:expr];)*) => {
        /// A mask class: one canonical SRKC element name per class id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Element { $($var = $id),* }

        impl Element {
            /// Every class, in id order.
            pub const ALL: &'static [Element] = &[$(Element::$var),*];

            /// Canonical (lexicon) name, e.g. `parking lot`.
            pub fn name(self) -> &'static str {
                match self { $(Element::$var => $name),* }
            }

            /// The plural used in sentences, e.g. `trees`.
            pub fn plural(self) -> &'static str {
                match self { $(Element::$var => $plural),* }
            }

            /// Display colour of the class in mask previews and `classes.json`.
            pub fn colour(self) -> [u8; 3] {
                match self { $(Element::$var => [$r, $g, $b]),* }
            }
        }
    };
}

elements! {
    BareLand = 0, "bare land", "bare land", [150, 120, 90];
    Grass = 1, "grass", "grass", [120, 200, 90];
    Tree = 2, "tree", "trees", [20, 100, 30];
    Building = 3, "building", "buildings", [200, 60, 60];
    House = 4, "house", "houses", [230, 120, 80];
    Church = 5, "church", "churches", [150, 40, 150];
    Road = 6, "road", "roads", [90, 90, 90];
    Roundabout = 7, "roundabout", "roundabouts", [140, 140, 160];
    Water = 8, "water", "water", [20, 60, 160];
    River = 9, "river", "rivers", [40, 100, 200];
    Pond = 10, "pond", "ponds", [60, 140, 220];
    SwimmingPool = 11, "swimming pool", "swimming pools", [0, 220, 230];
    Farmland = 12, "farmland", "farmland", [200, 200, 80];
    ParkingLot = 13, "parking lot", "parking lots", [170, 170, 170];
    Car = 14, "car", "cars", [250, 250, 0];
    Railway = 15, "railway", "railways", [110, 70, 40];
    Platform = 16, "platform", "platforms", [210, 190, 150];
    TrainStation = 17, "train station", "train stations", [120, 0, 60];
    Playground = 18, "playground", "playgrounds", [250, 150, 200];
    SportsField = 19, "sports field", "sports fields", [60, 170, 60];
    RunningTrack = 20, "running track", "running tracks", [200, 80, 40];
    TennisCourt = 21, "tennis court", "tennis courts", [40, 120, 160];
    BasketballCourt = 22, "basketball court", "basketball courts", [230, 150, 60];
    Plaza = 23, "plaza", "plazas", [230, 220, 190];
    Fountain = 24, "fountain", "fountains", [100, 200, 250];
    Factory = 25, "factory", "factories", [100, 100, 140];
    Warehouse = 26, "warehouse", "warehouses", [160, 170, 210];
    StorageTank = 27, "storage tank", "storage tanks", [240, 240, 240];
    School = 28, "school", "schools", [220, 80, 120];
    Hotel = 29, "hotel", "hotels", [250, 200, 120];
    Beach = 30, "beach", "beaches", [240, 220, 150];
}

impl Element {
    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Element> {
        Element::ALL.get(id as usize).copied()
    }

    /// Parse a canonical name (exact, case-insensitive).
    pub fn from_name(name: &str) -> Option<Element> {
        let n = name.trim().to_ascii_lowercase();
        Element::ALL.iter().copied().find(|e| e.name() == n)
    }
}

/// The 11 AAAAD scene concepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SceneClass {
    Church,
    Commercial,
    DenseResidential,
    Industrial,
    MediumResidential,
    Park,
    RailwayStation,
    Resort,
    School,
    SparseResidential,
    Square,
}

impl SceneClass {
    pub const ALL: [SceneClass; 11] = [
        SceneClass::Church,
        SceneClass::Commercial,
        SceneClass::DenseResidential,
        SceneClass::Industrial,
        SceneClass::MediumResidential,
        SceneClass::Park,
        SceneClass::RailwayStation,
        SceneClass::Resort,
        SceneClass::School,
        SceneClass::SparseResidential,
        SceneClass::Square,
    ];

    /// The concept as spelled in captions, e.g. `dense residential`.
    pub fn name(self) -> &'static str {
        match self {
            SceneClass::Church => "church",
            SceneClass::Commercial => "commercial",
            SceneClass::DenseResidential => "dense residential",
            SceneClass::Industrial => "industrial",
            SceneClass::MediumResidential => "medium residential",
            SceneClass::Park => "park",
            SceneClass::RailwayStation => "railway station",
            SceneClass::Resort => "resort",
            SceneClass::School => "school",
            SceneClass::SparseResidential => "sparse residential",
            SceneClass::Square => "square",
        }
    }

    /// Folder-safe name, e.g. `dense_residential`.
    pub fn slug(self) -> String {
        self.name().replace(' ', "_")
    }

    /// Parse a concept name; spaces, `_` and `-` are interchangeable.
    pub fn parse(name: &str) -> Result<SceneClass, SynthError> {
        let n = name.trim().to_ascii_lowercase().replace(['_', '-'], " ");
        SceneClass::ALL
            .iter()
            .copied()
            .find(|c| c.name() == n)
            .ok_or_else(|| SynthError::UnknownSceneClass {
                name: name.to_string(),
                known: SceneClass::ALL
                    .iter()
                    .map(|c| c.slug())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Elements every scene of the class contains (the test checks the masks).
    pub fn required_elements(self) -> &'static [Element] {
        use Element::*;
        match self {
            SceneClass::Church => &[Church, Plaza, Road, Tree],
            SceneClass::Commercial => &[Building, Road, ParkingLot, Car],
            SceneClass::DenseResidential => &[House, Road],
            SceneClass::Industrial => &[Factory, Warehouse, Road, StorageTank],
            SceneClass::MediumResidential => &[House, Road, Tree, Grass],
            SceneClass::Park => &[Grass, Tree, Pond, Road],
            SceneClass::RailwayStation => &[Railway, Platform, TrainStation, Road],
            SceneClass::Resort => &[Hotel, SwimmingPool, Beach, Water, Tree],
            SceneClass::School => &[School, SportsField, RunningTrack, Road],
            SceneClass::SparseResidential => &[House, Farmland, Road, Tree],
            SceneClass::Square => &[Plaza, Fountain, Tree, Road],
        }
    }
}

/// The SRKC relation ids the generator builds and the checker decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relation {
    Surrounds,
    Crosses,
    Along,
    OnBothSidesOf,
    InTheMiddleOf,
    NextTo,
    ParallelTo,
    Between,
}

impl Relation {
    pub const ALL: [Relation; 8] = [
        Relation::Surrounds,
        Relation::Crosses,
        Relation::Along,
        Relation::OnBothSidesOf,
        Relation::InTheMiddleOf,
        Relation::NextTo,
        Relation::ParallelTo,
        Relation::Between,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Relation::Surrounds => "surrounds",
            Relation::Crosses => "crosses",
            Relation::Along => "along",
            Relation::OnBothSidesOf => "on_both_sides_of",
            Relation::InTheMiddleOf => "in_the_middle_of",
            Relation::NextTo => "next_to",
            Relation::ParallelTo => "parallel_to",
            Relation::Between => "between",
        }
    }

    pub fn parse(id: &str) -> Result<Relation, SynthError> {
        Relation::ALL
            .iter()
            .copied()
            .find(|r| r.id() == id.trim())
            .ok_or_else(|| SynthError::UnknownRelation {
                name: id.to_string(),
                known: Relation::ALL
                    .iter()
                    .map(|r| r.id())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// One relation triple as written to `metadata.jsonl`:
/// `{"relation": "surrounds", "subject": "tree", "object": "pond"}`; `between` adds
/// `object2`. The subject is the element doing the relating (trees surround the pond).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triple {
    pub relation: String,
    pub subject: String,
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object2: Option<String>,
}

impl Triple {
    pub fn new(relation: Relation, subject: Element, object: Element) -> Triple {
        Triple {
            relation: relation.id().to_string(),
            subject: subject.name().to_string(),
            object: object.name().to_string(),
            object2: None,
        }
    }

    pub fn between(subject: Element, a: Element, b: Element) -> Triple {
        Triple {
            object2: Some(b.name().to_string()),
            ..Triple::new(Relation::Between, subject, a)
        }
    }

    /// The typed form, or an error naming the bad field.
    pub fn parse(&self) -> Result<(Relation, Element, Element, Option<Element>), SynthError> {
        let rel = Relation::parse(&self.relation)?;
        let el = |name: &str, field| {
            Element::from_name(name).ok_or_else(|| SynthError::UnknownElement {
                name: name.to_string(),
                field,
            })
        };
        let s = el(&self.subject, "subject")?;
        let o = el(&self.object, "object")?;
        let o2 = match &self.object2 {
            Some(n) => Some(el(n, "object2")?),
            None => None,
        };
        if rel == Relation::Between && o2.is_none() {
            return Err(SynthError::MissingObject2);
        }
        Ok((rel, s, o, o2))
    }
}
