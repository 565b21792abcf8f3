//! A run's transport and control: [`InProcess`] (every device a thread of
//! this process), or with `--features mpi` one MPI rank per Gpu
//! ([`super::mpi::MpiNet`]). Which one a run uses follows from the
//! [`super::Cluster`] it is given ([`super::Cluster::net`]); this file
//! only forwards each call to the one chosen.

use std::time::Instant;

use super::transport::{Collective, Control, InProcess, Transport, WaitError};
use crate::action::Product;

/// A run's transport and control.
pub enum Net {
    InProcess(InProcess),
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::MpiNet),
}

impl Control for Net {
    fn epoch(&self) -> Instant {
        match self {
            Net::InProcess(n) => n.epoch(),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.epoch(),
        }
    }
    fn start(&self, d: usize) -> std::result::Result<(), WaitError> {
        match self {
            Net::InProcess(n) => n.start(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.start(d),
        }
    }
    fn abort(&self) {
        match self {
            Net::InProcess(n) => n.abort(),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.abort(),
        }
    }
    fn aborted(&self) -> bool {
        match self {
            Net::InProcess(n) => n.aborted(),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.aborted(),
        }
    }
    fn finish(&self, d: usize) {
        match self {
            Net::InProcess(n) => n.finish(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.finish(d),
        }
    }
    fn finished(&self, d: usize) -> bool {
        match self {
            Net::InProcess(n) => n.finished(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.finished(d),
        }
    }
    fn local(&self, d: usize) -> bool {
        match self {
            Net::InProcess(n) => n.local(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.local(d),
        }
    }
    fn exchange(&self, mine: Vec<u8>) -> std::result::Result<Vec<Vec<u8>>, String> {
        match self {
            Net::InProcess(n) => n.exchange(mine),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.exchange(mine),
        }
    }
}

impl Transport for Net {
    fn send(&self, from: usize, to: usize, product: Product, staging: &wgpu::Buffer, bytes: u64) {
        match self {
            Net::InProcess(n) => n.send(from, to, product, staging, bytes),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.send(from, to, product, staging, bytes),
        }
    }
    fn receive(
        &self,
        to: usize,
        from: usize,
        product: Product,
        queue: &wgpu::Queue,
        dst: &wgpu::Buffer,
        control: &dyn Control,
    ) -> std::result::Result<u64, WaitError> {
        match self {
            Net::InProcess(n) => n.receive(to, from, product, queue, dst, control),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.receive(to, from, product, queue, dst, control),
        }
    }
}

impl Collective for Net {
    fn all_reduce(
        &self,
        endpoint: usize,
        data: Vec<f32>,
        control: &dyn Control,
    ) -> std::result::Result<Vec<f32>, WaitError> {
        match self {
            Net::InProcess(n) => n.all_reduce(endpoint, data, control),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.all_reduce(endpoint, data, control),
        }
    }
}
