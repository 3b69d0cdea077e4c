"""The embedded tiny CLAP: recipe (:mod:`.recipe`), settings (:mod:`.config`),
training (:mod:`.train`), measurement and card (:mod:`.card`)."""
