"""Consensus export: versioned snapshot folders of a project's consensus (see ``crowdgate.export.cli``)."""
