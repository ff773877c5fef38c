//! 1:N search over a roster holding several impressions per student.

use crate::compare::Comparer;
use crate::template::Template;

/// Enrolled templates grouped by student; each student may have any number of impressions.
#[derive(Debug, Clone)]
pub struct Roster<S> {
    students: Vec<(S, Vec<Template>)>,
}

/// The best-scoring student of a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a, S> {
    /// The student whose impressions matched best.
    pub student: &'a S,
    /// That student's best score over their impressions.
    pub score: f32,
    /// The best score of any other student (0 if there is none): how clear the decision was.
    pub runner_up: f32,
}

impl<S> Default for Roster<S> {
    fn default() -> Self {
        Self {
            students: Vec::new(),
        }
    }
}

impl<S> Roster<S> {
    /// An empty roster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a student with their enrolled impressions.
    pub fn enroll(&mut self, student: S, impressions: Vec<Template>) {
        self.students.push((student, impressions));
    }

    /// Number of students.
    pub fn len(&self) -> usize {
        self.students.len()
    }

    /// Whether no student is enrolled.
    pub fn is_empty(&self) -> bool {
        self.students.is_empty()
    }

    /// Compares the probe with every impression and answers the student with the best score (a
    /// student's score is the best over their impressions), or `None` for an empty roster. The
    /// caller decides with [`crate::THRESHOLD`] whether the candidate is accepted.
    pub fn search(&self, probe: &Template, comparer: &mut Comparer) -> Option<Candidate<'_, S>> {
        let mut best: Option<Candidate<'_, S>> = None;
        for (student, impressions) in &self.students {
            let score = impressions
                .iter()
                .map(|t| comparer.compare(probe, t))
                .fold(0.0, f32::max);
            match &mut best {
                Some(b) if score > b.score => {
                    *b = Candidate {
                        student,
                        score,
                        runner_up: b.score,
                    };
                }
                Some(b) => b.runner_up = b.runner_up.max(score),
                None => {
                    best = Some(Candidate {
                        student,
                        score,
                        runner_up: 0.0,
                    })
                }
            }
        }
        best
    }
}
