"""Data: one preprocessing path (`images`), dataset sources and their cache (`sources`), the split and
the pair sampler (`pairs`), random views (`views`), a fine-tune's replay (`replay`) and the built-in toon
faces (`toon`)."""
