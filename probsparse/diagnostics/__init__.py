"""Posterior diagnostics: conversion to ArviZ and sparse-recovery metrics."""

from .arviz import gaussian_posterior_to_inference_data, samples_to_inference_data
from .metrics import nmse_db, support_scores

__all__ = ["gaussian_posterior_to_inference_data", "nmse_db", "samples_to_inference_data", "support_scores"]
