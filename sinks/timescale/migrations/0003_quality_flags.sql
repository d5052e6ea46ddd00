-- The bits of readings.quality, for SQL users:
--   SELECT r.*, array(SELECT name FROM quality_flags f WHERE r.quality & f.bit <> 0) AS flags FROM readings r ...
CREATE TABLE quality_flags (
    bit         integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL
);
INSERT INTO quality_flags (bit, name, description) VALUES
    (1,  'out_of_range',       'the value is outside the configured range of its variable (normalize.ranges)'),
    (2,  'spike',              'the value jumped from the device''s previous reading by more than normalize.spike'),
    (4,  'totalizer_rollover', 'the totalizer wrapped around its counter maximum'),
    (8,  'totalizer_reset',    'the totalizer dropped without wrapping: meter reset or replaced'),
    (16, 'derived',            'computed, not measured (flow derived from the totalizer)'),
    (32, 'stale',              'the same exact value repeated normalize.stale_after times or more: the sensor may be stuck');
COMMENT ON TABLE quality_flags IS 'Meaning of each bit of readings.quality; 0 is a good reading.';
