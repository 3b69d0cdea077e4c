"""The embedded tiny Qwen2-Audio: recipe (:mod:`.recipe`), settings (:mod:`.config`),
training data (:mod:`.data`), training (:mod:`.train`), measurement and card (:mod:`.card`)."""
