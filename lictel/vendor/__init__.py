"""The vendor's view: what the license server's compliance upload tells the vendor, computed from
our own data (:mod:`.view`); the vendor's scrambled identities (:mod:`.ids`); the vendor side's
files (:mod:`.files`); and the two lined up, with every difference explained (:mod:`.diff`).
docs/vendor-view.md says what the upload carries and how each figure is computed."""
