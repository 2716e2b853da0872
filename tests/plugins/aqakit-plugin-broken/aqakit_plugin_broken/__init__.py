"""Deliberately broken: importing this plugin fails, as a plugin with a missing dependency would."""

raise RuntimeError("aqakit-plugin-broken is broken on purpose")
