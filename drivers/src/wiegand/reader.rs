//! The thin async shell around [`Decoder`]: edges from a source, a timer for the frame gap.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::sync::mpsc;

use super::decoder::{Card, Decoder, Edge, Timing, WiegandError};

/// Where edges come from: the GPIO character device, or a simulator's channel.
pub trait EdgeSource {
    /// The next edge; `Ok(None)` when the source is gone.
    fn next_edge(&mut self) -> impl Future<Output = io::Result<Option<Edge>>> + Send;
}

/// Edges from a channel (the simulator's side).
impl EdgeSource for mpsc::Receiver<Edge> {
    async fn next_edge(&mut self) -> io::Result<Option<Edge>> {
        Ok(self.recv().await)
    }
}

/// A Wiegand reader on two lines.
#[derive(Debug)]
pub struct WiegandReader<S> {
    source: S,
    decoder: Decoder,
    timing: Timing,
}

impl<S: EdgeSource> WiegandReader<S> {
    /// A reader over `source`.
    pub fn new(source: S, timing: Timing) -> Self {
        Self {
            source,
            decoder: Decoder::new(timing),
            timing,
        }
    }

    /// Gives the source back.
    pub fn into_inner(self) -> S {
        self.source
    }

    /// Pulses rejected as noise so far.
    pub fn noise_pulses(&self) -> u64 {
        self.decoder.noise_pulses()
    }

    /// The next frame (a card or a frame error); `Ok(None)` when the source is gone.
    pub async fn next_frame(&mut self) -> io::Result<Option<Result<Card, WiegandError>>> {
        loop {
            let edge = match self.decoder.deadline_ns() {
                None => self.source.next_edge().await?,
                // Kernel timestamps and tokio's timer are both monotonic: waiting one frame gap
                // (plus scheduling slack) after the last bit is the frame's end.
                Some(deadline) => {
                    let wait = self.timing.frame_gap() + Duration::from_millis(1);
                    match tokio::time::timeout(wait, self.source.next_edge()).await {
                        Ok(edge) => edge?,
                        Err(_) => {
                            if let Some(frame) = self.decoder.poll(deadline) {
                                return Ok(Some(frame));
                            }
                            continue;
                        }
                    }
                }
            };
            let Some(edge) = edge else {
                return Ok(self.decoder.poll(u64::MAX));
            };
            if let Some(frame) = self.decoder.edge(edge) {
                return Ok(Some(frame));
            }
        }
    }
}

#[cfg(feature = "linux")]
pub use gpio::GpioEdges;

#[cfg(feature = "linux")]
mod gpio {
    use std::io;
    use std::path::Path;

    use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, EventClock, Offset};
    use gpiocdev::tokio::AsyncRequest;

    use super::EdgeSource;
    use crate::wiegand::decoder::{Edge, Line};

    /// D0 and D1 read through the Linux GPIO character device, both edges, kernel timestamps
    /// from CLOCK_MONOTONIC, internal pull-ups on.
    #[derive(Debug)]
    pub struct GpioEdges {
        request: AsyncRequest,
        d0: Offset,
        d1: Offset,
    }

    impl GpioEdges {
        /// Requests lines `d0` and `d1` of `chip` (e.g. `/dev/gpiochip0`) as inputs.
        pub fn open(chip: &Path, d0: Offset, d1: Offset) -> Result<Self, gpiocdev::Error> {
            let request = gpiocdev::Request::builder()
                .on_chip(chip)
                .with_consumer("rollcall-wiegand")
                .with_lines(&[d0, d1])
                .as_input()
                .with_bias(Bias::PullUp)
                .with_edge_detection(EdgeDetection::BothEdges)
                .with_event_clock(EventClock::Monotonic)
                .with_kernel_event_buffer_size(512)
                .request()?;
            Ok(Self {
                request: AsyncRequest::new(request),
                d0,
                d1,
            })
        }
    }

    impl EdgeSource for GpioEdges {
        async fn next_edge(&mut self) -> io::Result<Option<Edge>> {
            loop {
                let event = self
                    .request
                    .read_edge_event()
                    .await
                    .map_err(io::Error::other)?;
                let line = if event.offset == self.d0 {
                    Line::D0
                } else if event.offset == self.d1 {
                    Line::D1
                } else {
                    continue;
                };
                return Ok(Some(Edge {
                    line,
                    falling: event.kind == EdgeKind::Falling,
                    at_ns: event.timestamp_ns,
                }));
            }
        }
    }
}
