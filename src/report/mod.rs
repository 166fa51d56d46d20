//! Reports of chaos experiments, for people and for CI: Markdown, one self-contained HTML page
//! (inline CSS and an inline SVG timeline), JSON, JUnit XML, and the `faultline status` table.
//!
//! Pure: experiments in, text out. No client, no files, no clock: what depends on the time
//! (ages, time left) takes `now` as an argument. The CLI (`cli::run`, `cli::report`,
//! `cli::status`) fetches the objects and writes the files.
//!
//! Every renderer reads the same [`ExperimentSummary`], so the formats never disagree about
//! what happened.

pub mod gameday;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
mod summary;
mod svg;
pub mod table;
mod text;

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::api::{ChaosExperiment, GameDay};

pub use summary::{ExperimentSummary, ProbeSummary, summarize};

/// A report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
    Json,
    Junit,
}

impl Format {
    /// The format a file name asks for: `.md`, `.html`/`.htm`, `.json`, `.xml` (JUnit).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "html" | "htm" => Some(Format::Html),
            "json" => Some(Format::Json),
            "xml" => Some(Format::Junit),
            _ => None,
        }
    }

    /// Renders one report covering `experiments` (one run). `title` names the run (the JUnit
    /// test suite, the HTML page title); `generated_at` is printed in the report.
    pub fn render(
        self,
        title: &str,
        experiments: &[ChaosExperiment],
        generated_at: DateTime<Utc>,
    ) -> String {
        self.render_run(title, experiments, &[], generated_at)
    }

    /// [`Format::render`] for a run that included game days: Markdown and HTML lead with each
    /// day and its stages; JSON and JUnit list the experiments (a game day's verdict is the
    /// exit code's business).
    pub fn render_run(
        self,
        title: &str,
        experiments: &[ChaosExperiment],
        gamedays: &[GameDay],
        generated_at: DateTime<Utc>,
    ) -> String {
        match self {
            Format::Markdown => markdown::render_run(title, experiments, gamedays),
            Format::Html => html::render_run(title, experiments, gamedays, generated_at),
            // Always the list, even for one experiment: a run's file has one shape.
            Format::Json => json::to_text(&json::report_list(experiments)),
            Format::Junit => junit::render(title, experiments, generated_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_file_extension() {
        assert_eq!(
            Format::from_path(Path::new("out/report.md")),
            Some(Format::Markdown)
        );
        assert_eq!(Format::from_path(Path::new("r.HTML")), Some(Format::Html));
        assert_eq!(Format::from_path(Path::new("r.json")), Some(Format::Json));
        assert_eq!(
            Format::from_path(Path::new("junit.xml")),
            Some(Format::Junit)
        );
        assert_eq!(Format::from_path(Path::new("report.txt")), None);
        assert_eq!(Format::from_path(Path::new("report")), None);
    }
}
