package timescale

// ParseMigrations exposes parseMigrations to the external tests.
var ParseMigrations = parseMigrations
