package query

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file describes the API in OpenAPI 3.0: each route of the route table
// carries its operation, and openAPIJSON assembles the document served at
// GET /api/openapi.json from the table, so a route cannot be registered
// without being described. Schemas and shared responses are below.

// operation is the OpenAPI description of one route.
type operation struct {
	id          string
	tag         string
	summary     string
	description string
	params      []paramSpec
	body        *bodySpec
	// ok is the success status; okSchema its body's schema (nil: no body)
	// and okFormats its media types (default JSON).
	ok        int
	okDesc    string
	okSchema  obj
	okFormats []string
	okHeaders obj
	// errors are the error statuses besides 401, which every operation has.
	errors []int
}

// paramSpec is one parameter.
type paramSpec struct {
	name, in, description string
	required              bool
	schema                obj
	// multi: the parameter may repeat (point=A&point=B).
	multi bool
}

// bodySpec is a request body.
type bodySpec struct {
	description string
	mediaType   string
	schema      obj
}

// obj is a JSON object of the document.
type obj = map[string]any

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func str(desc string) obj { return obj{"type": "string", "description": desc} }

func nullable(o obj) obj {
	out := obj{"nullable": true}
	for k, v := range o {
		out[k] = v
	}
	return out
}

func listOf(item obj) obj {
	return obj{"type": "object", "required": []string{"results"}, "additionalProperties": false,
		"properties": obj{"results": obj{"type": "array", "items": item}}}
}

// Parameters shared by several operations.
var (
	pointsQueryParam = paramSpec{name: "point", in: "query", required: true, multi: true,
		description: fmt.Sprintf("Point code; repeat for several points (at most %d). A point the caller cannot read answers 404 exactly as one that does not exist.", maxPoints),
		schema:      obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}}
	variablesQueryParam = paramSpec{name: "variable", in: "query", multi: true,
		description: fmt.Sprintf("Variable name (flow, totalizer, level, ...); repeat for several (at most %d). Every variable when absent.", maxVariables),
		schema:      obj{"type": "string", "pattern": variablePattern.String()}}
	codePathParam = paramSpec{name: "code", in: "path", required: true, description: "Point code.",
		schema: obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}}
	idPathParam = paramSpec{name: "id", in: "path", required: true, description: "Device id.",
		schema: obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}}
)

// Media types of tabular endpoints, described once.
const tabularDescription = "JSON by default; `Accept: text/csv` gives CSV with a header line, " +
	"`Accept: application/vnd.apache.arrow.stream` an Arrow IPC stream (record batches of 8192 rows, " +
	"timestamps as timestamp[us, UTC]). Any other Accept is 406. Rows are streamed as they are read."

var opOpenAPI = operation{
	id: "getOpenAPI", tag: "meta", summary: "This document",
	ok: 200, okDesc: "The OpenAPI 3.0 document of the API.", okSchema: obj{"type": "object"},
	errors: []int{400, 406},
}

var opData = operation{
	id: "getTelemetryData", tag: "telemetry", summary: "Readings or rollups of points over a time range",
	description: "Raw readings (`time, point, variable, value, quality`), or with `bucket` the rollups " +
		"readings_1m/_1h/_1d (`bucket, point, variable, min, max, avg, last, count`; minutes and hours are UTC, " +
		"days local to rollups.day_timezone). A row is in the range when its time (or its bucket's start) is in [from, to).\n\n" +
		"Rows are ordered by point, variable, then time: the tables' primary key, so each page is one index range scan " +
		"(for rollups, of their materialized part, plus the point's open buckets, aggregated at query time). " +
		"Pagination is by keyset: when more rows follow, the response has a `Link: <...>; rel=\"next\"` header " +
		"(and, in JSON, `next` and `next_cursor`; in Arrow, schema metadata `next` and `next_cursor`). " +
		"Following next links reproduces the whole result exactly, without gaps or duplicates. The cursor is opaque " +
		"and belongs to its query: point, variable, from, to and bucket must stay the same; page_size may change.\n\n" +
		"Limits: a raw range at most api.max_range (default 31 days); 1m at most 92 days, 1h 731 days, 1d 7305 days " +
		"(or api.max_range when larger). " + tabularDescription,
	params: []paramSpec{
		pointsQueryParam, variablesQueryParam,
		{name: "from", in: "query", required: true, description: "Start of the range (inclusive), RFC 3339.",
			schema: obj{"type": "string", "format": "date-time"}},
		{name: "to", in: "query", description: "End of the range (exclusive), RFC 3339. Default now.",
			schema: obj{"type": "string", "format": "date-time"}},
		{name: "bucket", in: "query", description: "Read the rollup of this bucket; raw readings when absent.",
			schema: obj{"type": "string", "enum": []string{"raw", "1m", "1h", "1d"}}},
		{name: "page_size", in: "query", description: "Rows per page: 1 to api.max_page_size (default 50000); default api.default_page_size (default 1000).",
			schema: obj{"type": "integer", "minimum": 1}},
		{name: "cursor", in: "query", description: "Where the page starts: the next_cursor of the previous page.",
			schema: obj{"type": "string", "maxLength": maxCursorLen}},
	},
	ok: 200, okDesc: "One page of rows.", okSchema: ref("DataPage"), okFormats: tabular,
	okHeaders: obj{"Link": obj{"description": `The next page: <url>; rel="next". Absent on the last page.`, "schema": obj{"type": "string"}}},
	errors:    []int{400, 404, 406, 503},
}

var opLatest = operation{
	id: "getTelemetryLatest", tag: "telemetry", summary: "The newest reading of each point and variable",
	description: "One row per point and variable that has readings, ordered by point and variable. " + tabularDescription,
	params: []paramSpec{
		{name: "point", in: "query", multi: true,
			description: fmt.Sprintf("Point code; repeat for several (at most %d). Every point the caller can read when absent.", maxLatestPoints),
			schema:      obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}},
		variablesQueryParam,
	},
	ok: 200, okDesc: "The latest readings.", okSchema: listOf(ref("Reading")), okFormats: tabular,
	errors: []int{400, 404, 406, 503},
}

var opProcess = operation{
	id: "processPayload", tag: "telemetry", summary: "Ingest a provider payload",
	description: "The body, unchanged, becomes a record of telemetry.raw keyed by the device, as if the MQTT bridge " +
		"had received it: headers mqtt-topic (`http:/api/telemetry/process/<provider>/<device>`), received-at " +
		"(RFC 3339, UTC) and provider. 202 means Kafka acknowledged the record from all in-sync replicas; any " +
		"other answer means it may not be stored: retry. The caller needs `write` on the device's point. " +
		"The provider defaults to the device's registered one.",
	params: []paramSpec{
		{name: "device", in: "query", description: "Device id (or the X-Device header).", schema: obj{"type": "string", "maxLength": maxIdentLen}},
		{name: "provider", in: "query", description: "Provider of the payload format (or the X-Provider header).", schema: obj{"type": "string", "pattern": providerPattern.String()}},
		{name: HeaderDevice, in: "header", description: "Device id, instead of the query parameter.", schema: obj{"type": "string"}},
		{name: HeaderProvider, in: "header", description: "Provider, instead of the query parameter.", schema: obj{"type": "string"}},
	},
	body: &bodySpec{description: "The payload, any bytes (at most 1 MB by default).", mediaType: "*/*",
		schema: obj{"type": "string", "format": "binary"}},
	ok: 202, okDesc: "Kafka acknowledged the record.", okSchema: ref("Accepted"),
	errors: []int{400, 403, 404, 406, 413, 503},
}

var opOwners = operation{
	id: "listOwners", tag: "users", summary: "The owners of a point",
	description: "The users related to the point (PRIMARY, ADMINISTRATOR, SECONDARY) with their permissions. The caller needs read.",
	params: []paramSpec{{name: "point", in: "query", required: true, description: "Point code.",
		schema: obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen}}},
	ok: 200, okDesc: "The owners.", okSchema: listOf(ref("Owner")),
	errors: []int{400, 404, 406},
}

var opSetNotifications = operation{
	id: "setNotifications", tag: "users", summary: "Set notification preferences for a point",
	description: "Sets the caller's preferences for a point they can read, or (with manage_notifications) " +
		"those of another user related to the point. Audited.",
	body: &bodySpec{description: "The preferences.", mediaType: MediaJSON, schema: ref("NotificationsInput")},
	ok:   200, okDesc: "The preferences as stored.", okSchema: ref("Notifications"),
	errors: []int{400, 403, 404, 406, 413, 415, 422},
}

var opListPoints = operation{
	id: "listPoints", tag: "points", summary: "The points the caller can read",
	ok: 200, okDesc: "The points, ordered by code.", okSchema: listOf(ref("Point")),
	errors: []int{400, 406},
}

var opCreatePoint = operation{
	id: "createPoint", tag: "points", summary: "Create a point (administrators)",
	body: &bodySpec{description: "The point.", mediaType: MediaJSON, schema: ref("PointCreate")},
	ok:   201, okDesc: "Created.", okSchema: ref("Point"),
	okHeaders: obj{"Location": obj{"description": "The point's URL.", "schema": obj{"type": "string"}}},
	errors:    []int{400, 403, 406, 409, 413, 415, 422},
}

var opGetPoint = operation{
	id: "getPoint", tag: "points", summary: "One point, with the caller's permissions on it",
	params: []paramSpec{codePathParam},
	ok:     200, okDesc: "The point.", okSchema: ref("Point"),
	errors: []int{400, 404, 406},
}

var opUpdatePoint = operation{
	id: "updatePoint", tag: "points", summary: "Change a point's fields (write)",
	params: []paramSpec{codePathParam},
	body:   &bodySpec{description: "The fields to change; absent fields stay.", mediaType: MediaJSON, schema: ref("PointPatch")},
	ok:     200, okDesc: "The point as changed.", okSchema: ref("Point"),
	errors: []int{400, 403, 404, 406, 413, 415, 422},
}

var opDeletePoint = operation{
	id: "deletePoint", tag: "points", summary: "Delete a point without devices (administrators)",
	description: "Its owners and notification preferences go with it; its readings stay.",
	params:      []paramSpec{codePathParam},
	ok:          204, okDesc: "Deleted.",
	errors: []int{400, 403, 404, 409},
}

var opListDevices = operation{
	id: "listDevices", tag: "points", summary: "The devices of a point",
	params: []paramSpec{codePathParam},
	ok:     200, okDesc: "The devices, ordered by id.", okSchema: listOf(ref("Device")),
	errors: []int{400, 404, 406},
}

var opAddDevice = operation{
	id: "addDevice", tag: "points", summary: "Add a device to a point (manage_devices)",
	params: []paramSpec{codePathParam},
	body:   &bodySpec{description: "The device.", mediaType: MediaJSON, schema: ref("DeviceCreate")},
	ok:     201, okDesc: "Created.", okSchema: ref("Device"),
	okHeaders: obj{"Location": obj{"description": "The device's URL.", "schema": obj{"type": "string"}}},
	errors:    []int{400, 403, 404, 406, 409, 413, 415, 422},
}

var opUpdateDevice = operation{
	id: "updateDevice", tag: "points", summary: "Change or move a device (manage_devices on both points)",
	params: []paramSpec{idPathParam},
	body:   &bodySpec{description: "The fields to change; absent fields stay.", mediaType: MediaJSON, schema: ref("DevicePatch")},
	ok:     200, okDesc: "The device as changed.", okSchema: ref("Device"),
	errors: []int{400, 403, 404, 406, 413, 415, 422},
}

var opRemoveDevice = operation{
	id: "removeDevice", tag: "points", summary: "Remove a device (manage_devices)",
	description: "Its readings stay.",
	params:      []paramSpec{idPathParam},
	ok:          204, okDesc: "Removed.",
	errors: []int{400, 403, 404},
}

// errorResponses names the shared response of each error status.
var errorResponses = map[int]struct{ name, desc string }{
	400: {"BadRequest", "A parameter is malformed, unknown or out of its limits; `param` names it."},
	401: {"Unauthorized", "No valid `Authorization: Token <key>`: missing, malformed, unknown, revoked or expired."},
	403: {"Forbidden", "The caller can see the point but lacks the permission."},
	404: {"NotFound", "No such point or device, or one the caller may not see (the same answer)."},
	406: {"NotAcceptable", "The endpoint cannot answer in any type the Accept header allows."},
	409: {"Conflict", "The change clashes with the current state (the code or id is taken, the point still has devices)."},
	413: {"PayloadTooLarge", "The body is too large."},
	415: {"UnsupportedMediaType", "The body must be application/json."},
	422: {"Unprocessable", "A field's value is invalid; `param` names it."},
	503: {"Unavailable", "A dependency is slow or down, or the server is stopping; retry after Retry-After."},
}

// schemas are the document's component schemas.
func schemas() obj {
	dt := func(desc string) obj { return obj{"type": "string", "format": "date-time", "description": desc} }
	num := func(desc string) obj {
		return obj{"type": "number", "format": "double", "nullable": true, "description": desc + " Null for NaN or infinity."}
	}
	perms := obj{"type": "array", "items": obj{"type": "string",
		"enum": []string{"read", "write", "manage_devices", "manage_owners", "manage_compliance", "manage_notifications"}}}
	coords := func(name string, lim int) obj {
		return obj{"type": "number", "nullable": true, "minimum": -lim, "maximum": lim, "description": name + " in degrees; null when unknown."}
	}
	return obj{
		"Error": obj{"type": "object", "required": []string{"error"}, "additionalProperties": false, "properties": obj{
			"error": str("What went wrong."),
			"param": str("The parameter, header or body field at fault, when one is."),
		}},
		"Reading": obj{"type": "object", "required": []string{"time", "point", "variable", "value", "quality"}, "additionalProperties": false,
			"properties": obj{
				"time": dt("When it was measured."), "point": str("Point code."), "variable": str("Variable name."),
				"value":   num("The value in the variable's canonical unit."),
				"quality": obj{"type": "integer", "format": "int32", "description": "Bit set of quality flags; 0 is good."},
			}},
		"Bucket": obj{"type": "object", "required": []string{"bucket", "point", "variable", "min", "max", "avg", "last", "count"},
			"additionalProperties": false, "properties": obj{
				"bucket": dt("Start of the bucket."), "point": str("Point code."), "variable": str("Variable name."),
				"min": num("Smallest value."), "max": num("Largest value."), "avg": num("Mean value."),
				"last":  num("The value at the latest time in the bucket."),
				"count": obj{"type": "integer", "format": "int64", "description": "Readings in the bucket."},
			}},
		"DataPage": obj{"type": "object", "required": []string{"next", "next_cursor", "results"}, "additionalProperties": false,
			"properties": obj{
				"next":        nullable(str("URL (path and query) of the next page; null on the last page.")),
				"next_cursor": nullable(str("Cursor of the next page; null on the last page.")),
				"results": obj{"type": "array", "description": "Readings, or buckets with the bucket parameter.",
					"items": obj{"oneOf": []obj{ref("Reading"), ref("Bucket")}}},
			}},
		"Point": obj{"type": "object", "required": []string{"code", "name", "kind", "timezone", "latitude", "longitude", "active"},
			"additionalProperties": false, "properties": obj{
				"code": str("Unique code."), "name": str("Name."),
				"kind":        obj{"type": "string", "enum": []string{"well", "surface", "other"}},
				"timezone":    str("IANA zone of the point's local days."),
				"latitude":    coords("Latitude", 90),
				"longitude":   coords("Longitude", 180),
				"active":      obj{"type": "boolean"},
				"permissions": obj{"type": "array", "description": "The caller's permissions (one point only).", "items": perms["items"]},
			}},
		"PointCreate": obj{"type": "object", "required": []string{"code"}, "additionalProperties": false, "properties": obj{
			"code":      obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen, "description": "Unique code: no spaces or control characters."},
			"name":      str("Name; the code when empty."),
			"kind":      obj{"type": "string", "enum": []string{"well", "surface", "other"}, "description": "Default well."},
			"timezone":  str("IANA zone; default America/Santiago."),
			"latitude":  coords("Latitude", 90),
			"longitude": coords("Longitude", 180),
			"active":    obj{"type": "boolean", "description": "Default true."},
		}},
		"PointPatch": obj{"type": "object", "additionalProperties": false, "properties": obj{
			"name": str("Name."), "kind": obj{"type": "string", "enum": []string{"well", "surface", "other"}},
			"timezone": str("IANA zone."), "latitude": coords("Latitude", 90), "longitude": coords("Longitude", 180),
			"active": obj{"type": "boolean"},
		}},
		"Device": obj{"type": "object", "required": []string{"id", "point", "provider", "active"}, "additionalProperties": false,
			"properties": obj{"id": str("Device id."), "point": str("Point code."),
				"provider": str("Provider of its payloads; empty when none is registered."), "active": obj{"type": "boolean"}}},
		"DeviceCreate": obj{"type": "object", "required": []string{"id"}, "additionalProperties": false, "properties": obj{
			"id":       obj{"type": "string", "minLength": 1, "maxLength": maxIdentLen, "description": "Unique id: no spaces or control characters."},
			"provider": obj{"type": "string", "description": "Provider of its payloads."},
			"active":   obj{"type": "boolean", "description": "Default true."},
		}},
		"DevicePatch": obj{"type": "object", "additionalProperties": false, "properties": obj{
			"point":    str("Move the device to this point."),
			"provider": nullable(str("Provider; null or empty clears it.")),
			"active":   obj{"type": "boolean"},
		}},
		"Owner": obj{"type": "object", "additionalProperties": false,
			"required": []string{"point", "user_id", "email", "name", "relation", "permissions", "granted_by", "created_at", "updated_at"},
			"properties": obj{
				"point": str("Point code."), "user_id": obj{"type": "integer", "format": "int64"},
				"email": str("The user's email."), "name": str("The user's name."),
				"relation":    obj{"type": "string", "enum": []string{"PRIMARY", "SECONDARY", "ADMINISTRATOR"}},
				"permissions": perms,
				"granted_by":  obj{"type": "integer", "format": "int64", "nullable": true, "description": "Who granted it; null for the system."},
				"created_at":  dt("When granted."), "updated_at": dt("Last changed."),
			}},
		"NotificationsInput": obj{"type": "object", "required": []string{"point"}, "additionalProperties": false, "properties": obj{
			"point":              str("Point code."),
			"user_id":            obj{"type": "integer", "format": "int64", "minimum": 1, "description": "Whose preferences; the caller's when absent."},
			"notification_types": obj{"type": "array", "items": obj{"type": "string", "enum": notificationTypes()}},
			"channels":           obj{"type": "array", "items": obj{"type": "string", "enum": []string{"email", "sms", "webhook", "in_app"}}},
			"webhook_url":        str("http(s) URL; required with the webhook channel."),
			"phone":              str("E.164 phone (+56912345678); required with the sms channel."),
			"language":           obj{"type": "string", "enum": []string{"es", "en"}, "description": "Default es."},
			"active":             obj{"type": "boolean", "description": "Default true."},
		}},
		"Notifications": obj{"type": "object", "additionalProperties": false,
			"required": []string{"point", "user_id", "notification_types", "channels", "webhook_url", "phone", "language", "active", "updated_at"},
			"properties": obj{
				"point": str("Point code."), "user_id": obj{"type": "integer", "format": "int64"},
				"notification_types": obj{"type": "array", "items": obj{"type": "string", "enum": notificationTypes()}},
				"channels":           obj{"type": "array", "items": obj{"type": "string", "enum": []string{"email", "sms", "webhook", "in_app"}}},
				"webhook_url":        str("Webhook URL, or empty."), "phone": str("Phone, or empty."),
				"language": obj{"type": "string", "enum": []string{"es", "en"}}, "active": obj{"type": "boolean"},
				"updated_at": dt("Last changed."),
			}},
		"Accepted": obj{"type": "object", "additionalProperties": false,
			"required": []string{"status", "device", "point", "provider", "bytes", "received_at"},
			"properties": obj{
				"status": obj{"type": "string", "enum": []string{"accepted"}}, "device": str("Device id."),
				"point": str("The device's point."), "provider": str("Provider header written."),
				"bytes": obj{"type": "integer"}, "received_at": dt("The received-at header written."),
			}},
	}
}

func notificationTypes() []string {
	return []string{"threshold", "data_gap", "stuck_sensor", "totalizer_reset", "compliance_missing", "compliance_rejected", "daily_report"}
}

// openAPIDocument returns the document of the routes.
func openAPIDocument(routes []route, lim limits) obj {
	paths := obj{}
	for _, rt := range routes {
		path := "/api" + rt.pattern
		item, _ := paths[path].(obj)
		if item == nil {
			item = obj{}
			paths[path] = item
		}
		item[strings.ToLower(rt.method)] = rt.op.document()
	}
	responses := obj{}
	for _, e := range errorResponses {
		r := obj{"description": e.desc, "content": obj{MediaJSON: obj{"schema": ref("Error")}}}
		if e.name == "Unauthorized" {
			r["headers"] = obj{"WWW-Authenticate": obj{"description": "Token", "schema": obj{"type": "string"}}}
		}
		if e.name == "Unavailable" {
			r["headers"] = obj{"Retry-After": obj{"description": "Seconds to wait.", "schema": obj{"type": "integer"}}}
		}
		responses[e.name] = r
	}
	return obj{
		"openapi": "3.0.3",
		"info": obj{
			"title":   "Stack VPS API",
			"version": "1",
			"description": "Telemetry and compliance data of water catchment points. Every route needs " +
				"`Authorization: Token <key>`; a caller sees and changes only the points they own or were granted, " +
				"and every change is written to audit_log with the request's X-Request-Id. Errors are JSON " +
				"`{\"error\": \"...\", \"param\": \"...\"}`. Paths end with a slash; a path without it is redirected (308). " +
				fmt.Sprintf("Page sizes: default %d, at most %d. Raw ranges: at most %s.",
					lim.defPage, lim.maxPage, durationText(lim.maxRange[""])),
		},
		"servers":  []obj{{"url": "/"}},
		"security": []obj{{"Token": []string{}}},
		"tags":     []obj{{"name": "telemetry"}, {"name": "points"}, {"name": "users"}, {"name": "compliance"}, {"name": "alerts"}, {"name": "meta"}},
		"paths":    paths,
		"components": obj{"schemas": schemas(), "responses": responses, "securitySchemes": obj{"Token": obj{
			"type": "apiKey", "in": "header", "name": "Authorization",
			"description": "`Authorization: Token <key>`, the key made by `stackvps admin token create`.",
		}}},
	}
}

// document returns the OpenAPI operation object.
func (op operation) document() obj {
	d := obj{"operationId": op.id, "summary": op.summary, "tags": []string{op.tag}}
	if op.description != "" {
		d["description"] = op.description
	}
	var params []obj
	for _, p := range op.params {
		po := obj{"name": p.name, "in": p.in, "description": p.description, "required": p.required || p.in == "path"}
		if p.multi {
			po["schema"] = obj{"type": "array", "items": p.schema}
			po["style"], po["explode"] = "form", true
		} else {
			po["schema"] = p.schema
		}
		params = append(params, po)
	}
	if params != nil {
		d["parameters"] = params
	}
	if op.body != nil {
		d["requestBody"] = obj{"required": true, "description": op.body.description,
			"content": obj{op.body.mediaType: obj{"schema": op.body.schema}}}
	}
	ok := obj{"description": op.okDesc}
	if op.okSchema != nil {
		formats := op.okFormats
		if formats == nil {
			formats = jsonOnly
		}
		content := obj{}
		for _, f := range formats {
			switch f {
			case MediaJSON:
				content[f] = obj{"schema": op.okSchema}
			case MediaCSV:
				content[f] = obj{"schema": obj{"type": "string", "description": "CSV with a header line of the column names."}}
			default:
				content[f] = obj{"schema": obj{"type": "string", "format": "binary", "description": "Arrow IPC stream."}}
			}
		}
		ok["content"] = content
	}
	if op.okHeaders != nil {
		ok["headers"] = op.okHeaders
	}
	responses := obj{strconv.Itoa(op.ok): ok}
	codes := append([]int{401}, op.errors...)
	slices.Sort(codes)
	for _, c := range slices.Compact(codes) {
		responses[strconv.Itoa(c)] = obj{"$ref": "#/components/responses/" + errorResponses[c].name}
	}
	d["responses"] = responses
	return d
}

// durationText writes d in days when it is whole days.
func durationText(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	}
	return d.String()
}

// openAPIJSON returns the document as indented JSON.
func openAPIJSON(routes []route, lim limits) ([]byte, error) {
	b, err := json.MarshalIndent(openAPIDocument(routes, lim), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
