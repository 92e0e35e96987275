"""The annotator and project report: read (:mod:`.data`), drawn (:mod:`.charts`, :mod:`.html`), written as files
(:mod:`.files`) and printed (:mod:`.cli`, ``crowdgate report``)."""
