-- Ingest spine: provenance on readings, the sink's offsets, and the points
-- and devices the normalize stage maps payloads to.

-- Where each value came from, for audits: the device that measured it and
-- the value and unit it sent before conversion to the canonical unit.
ALTER TABLE readings ADD COLUMN device text;
ALTER TABLE readings ADD COLUMN raw_value double precision;
ALTER TABLE readings ADD COLUMN raw_unit text;

-- The Kafka offsets the TimescaleDB sink has stored, written in the same
-- transaction as the rows: on assignment the sink resumes from here, so a
-- crash or rebalance neither loses nor duplicates a reading.
CREATE TABLE sink_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE catchment_points (
    code       text PRIMARY KEY,
    name       text        NOT NULL,
    kind       text        NOT NULL DEFAULT 'well' CHECK (kind IN ('well', 'surface', 'other')),
    timezone   text        NOT NULL DEFAULT 'America/Santiago',
    latitude   double precision,
    longitude  double precision,
    active     boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE catchment_points IS 'Wells and surface intakes; code is what readings.point holds.';

CREATE TABLE devices (
    id         text PRIMARY KEY,
    point      text        NOT NULL REFERENCES catchment_points (code) ON UPDATE CASCADE,
    provider   text,
    active     boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_point_idx ON devices (point);
COMMENT ON TABLE devices IS 'Sensors and loggers; id is the device id in MQTT topics. A device reports for one point.';

-- Normalize caches devices; a change notifies it to refresh at once.
CREATE FUNCTION stackvps_notify_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stackvps_devices', current_schema());
    RETURN NULL;
END $$;
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION stackvps_notify_devices();
