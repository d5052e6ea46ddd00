package query

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/stackvps/stackvps/accounts"
	"github.com/stackvps/stackvps/points"
)

// pointJSON is a point as the API shows it.
type pointJSON struct {
	Code      string   `json:"code"`
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Timezone  string   `json:"timezone"`
	Latitude  *float64 `json:"latitude"`
	Longitude *float64 `json:"longitude"`
	Active    bool     `json:"active"`
	// Permissions are the caller's on the point (GET of one point only).
	Permissions []accounts.Permission `json:"permissions,omitempty"`
}

func toPointJSON(p points.Point) pointJSON {
	return pointJSON{Code: p.Code, Name: p.Name, Kind: p.Kind, Timezone: p.Timezone, Latitude: p.Latitude,
		Longitude: p.Longitude, Active: p.Active}
}

// deviceJSON is a device as the API shows it.
type deviceJSON struct {
	ID       string `json:"id"`
	Point    string `json:"point"`
	Provider string `json:"provider"`
	Active   bool   `json:"active"`
}

func toDeviceJSON(d points.Device) deviceJSON {
	return deviceJSON{ID: d.ID, Point: d.Point, Provider: d.Provider, Active: d.Active}
}

// listJSON is the body of every list: {"results": [...]}.
type listJSON[T any] struct {
	Results []T `json:"results"`
}

// pointFieldParams map the start of an accounts.ErrInvalid message about a
// point to the body field.
var pointFieldParams = [][2]string{
	{"point code", "code"}, {"name", "name"}, {"kind", "kind"}, {"timezone", "timezone"},
	{"latitude", "latitude"}, {"longitude", "longitude"},
}

// deviceFieldParams do the same for devices.
var deviceFieldParams = [][2]string{{"device id", "id"}, {"point code", "point"}, {"device", "id"}, {"point", "point"}}

// noParams refuses any query parameter.
func noParams(r *http.Request) error {
	_, err := parseParams(r, nil)
	return err
}

// handleListPoints serves GET /api/points/: the points the caller can read.
func (a *API) handleListPoints(w http.ResponseWriter, r *http.Request) error {
	if _, err := jsonCall(w, r, "", nil); err != nil {
		return err
	}
	pts, err := a.acc.Points(r.Context(), principal(r))
	if err != nil {
		return fromAccounts(err, "")
	}
	out := listJSON[pointJSON]{Results: make([]pointJSON, len(pts))}
	for i, p := range pts {
		out.Results[i] = toPointJSON(p)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pointCreate is the body of POST /api/points/.
type pointCreate struct {
	Code      string   `json:"code"`
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Timezone  string   `json:"timezone"`
	Latitude  *float64 `json:"latitude"`
	Longitude *float64 `json:"longitude"`
	Active    *bool    `json:"active"`
}

// handleCreatePoint serves POST /api/points/ (administrators).
func (a *API) handleCreatePoint(w http.ResponseWriter, r *http.Request) error {
	var in pointCreate
	if _, err := jsonCall(w, r, "", &in); err != nil {
		return err
	}
	if err := checkIdent("code", in.Code); err != nil {
		return err
	}
	active := in.Active == nil || *in.Active
	p, err := a.acc.CreatePoint(r.Context(), principal(r), points.Point{Code: in.Code, Name: in.Name, Kind: in.Kind,
		Timezone: in.Timezone, Latitude: in.Latitude, Longitude: in.Longitude, Active: active})
	switch {
	case errors.Is(err, accounts.ErrForbidden):
		return fromAccounts(err, "")
	case errors.Is(err, accounts.ErrConflict):
		return fromAccounts(err, "code")
	case err != nil:
		return fromAccounts(err, paramInMessage(err, "body", pointFieldParams...))
	}
	w.Header().Set("Location", "/api/points/"+url.PathEscape(p.Code)+"/")
	writeJSON(w, http.StatusCreated, toPointJSON(p))
	return nil
}

// handleGetPoint serves GET /api/points/{code}/, with the caller's
// permissions on the point.
func (a *API) handleGetPoint(w http.ResponseWriter, r *http.Request) error {
	code, err := jsonCall(w, r, "code", nil)
	if err != nil {
		return err
	}
	pr := principal(r)
	p, err := a.acc.Point(r.Context(), pr, code)
	if err != nil {
		return fromAccounts(err, "code")
	}
	perms, err := a.acc.Permissions(r.Context(), pr, code)
	if err != nil {
		return fromAccounts(err, "code")
	}
	out := toPointJSON(p)
	out.Permissions = perms
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pointPatch is the body of PATCH /api/points/{code}/: absent fields stay,
// latitude and longitude may be null (unknown).
type pointPatch struct {
	Name      optional[string]  `json:"name"`
	Kind      optional[string]  `json:"kind"`
	Timezone  optional[string]  `json:"timezone"`
	Latitude  optional[float64] `json:"latitude"`
	Longitude optional[float64] `json:"longitude"`
	Active    optional[bool]    `json:"active"`
}

// apply changes p as the patch says.
func (pp pointPatch) apply(p *points.Point) error {
	for _, f := range []struct {
		name string
		o    optional[string]
		dst  *string
	}{{"name", pp.Name, &p.Name}, {"kind", pp.Kind, &p.Kind}, {"timezone", pp.Timezone, &p.Timezone}} {
		v, ok, err := f.o.value(f.name)
		if err != nil {
			return err
		}
		if ok {
			*f.dst = v
		}
	}
	for _, f := range []struct {
		o   optional[float64]
		dst **float64
	}{{pp.Latitude, &p.Latitude}, {pp.Longitude, &p.Longitude}} {
		switch {
		case f.o.null:
			*f.dst = nil
		case f.o.set:
			*f.dst = new(f.o.v)
		}
	}
	v, ok, err := pp.Active.value("active")
	if err != nil {
		return err
	}
	if ok {
		p.Active = v
	}
	return nil
}

// handleUpdatePoint serves PATCH /api/points/{code}/ (write). accounts
// applies the patch to the point as stored, with its row locked, checks
// write and audits, all in the transaction that writes it back: two
// patches of different fields sent at once both take effect.
func (a *API) handleUpdatePoint(w http.ResponseWriter, r *http.Request) error {
	var patch pointPatch
	code, err := jsonCall(w, r, "code", &patch)
	if err != nil {
		return err
	}
	p, err := a.acc.PatchPoint(r.Context(), principal(r), code, patch.apply)
	if err != nil {
		if errors.Is(err, accounts.ErrNotFound) || errors.Is(err, accounts.ErrForbidden) {
			return fromAccounts(err, "code")
		}
		return fromAccounts(err, paramInMessage(err, "body", pointFieldParams...))
	}
	writeJSON(w, http.StatusOK, toPointJSON(p))
	return nil
}

// handleDeletePoint serves DELETE /api/points/{code}/ (administrators).
func (a *API) handleDeletePoint(w http.ResponseWriter, r *http.Request) error {
	code, err := pathParam(r, "code")
	if err != nil {
		return err
	}
	if err := noParams(r); err != nil {
		return err
	}
	if err := a.acc.DeletePoint(r.Context(), principal(r), code); err != nil {
		return fromAccounts(err, "code")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleListDevices serves GET /api/points/{code}/devices/.
func (a *API) handleListDevices(w http.ResponseWriter, r *http.Request) error {
	code, err := jsonCall(w, r, "code", nil)
	if err != nil {
		return err
	}
	ds, err := a.acc.Devices(r.Context(), principal(r), code)
	if err != nil {
		return fromAccounts(err, "code")
	}
	out := listJSON[deviceJSON]{Results: make([]deviceJSON, len(ds))}
	for i, d := range ds {
		out.Results[i] = toDeviceJSON(d)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deviceCreate is the body of POST /api/points/{code}/devices/.
type deviceCreate struct {
	ID       string `json:"id"`
	Provider string `json:"provider"`
	Active   *bool  `json:"active"`
}

// checkProvider validates a provider name ("" is no provider).
func checkProvider(s string) error {
	if s != "" && !providerPattern.MatchString(s) {
		return badParam("provider", "%s is not a provider name (letters, digits, _ . -, at most 64)", quoted(s))
	}
	return nil
}

// handleAddDevice serves POST /api/points/{code}/devices/ (manage_devices).
func (a *API) handleAddDevice(w http.ResponseWriter, r *http.Request) error {
	var in deviceCreate
	code, err := jsonCall(w, r, "code", &in)
	if err != nil {
		return err
	}
	if err := checkIdent("id", in.ID); err != nil {
		return err
	}
	if err := checkProvider(in.Provider); err != nil {
		return err
	}
	d, err := a.acc.AddDevice(r.Context(), principal(r), points.Device{ID: in.ID, Point: code, Provider: in.Provider,
		Active: in.Active == nil || *in.Active})
	switch {
	case errors.Is(err, accounts.ErrNotFound) || errors.Is(err, accounts.ErrForbidden):
		return fromAccounts(err, "code")
	case errors.Is(err, accounts.ErrConflict):
		return fromAccounts(err, "id")
	case err != nil:
		return fromAccounts(err, paramInMessage(err, "body", deviceFieldParams...))
	}
	w.Header().Set("Location", "/api/devices/"+url.PathEscape(d.ID)+"/")
	writeJSON(w, http.StatusCreated, toDeviceJSON(d))
	return nil
}

// deviceNotFound is the one answer for a device that does not exist and
// for one on a point the caller cannot read.
func deviceNotFound(id, param string) *Error {
	return &Error{Status: http.StatusNotFound, Param: param, Message: fmt.Sprintf("device %q %s", id, accounts.ErrNotFound)}
}

// devicePatch is the body of PATCH /api/devices/{id}/: absent fields stay;
// point moves the device; provider null or "" clears it.
type devicePatch struct {
	Point    optional[string] `json:"point"`
	Provider optional[string] `json:"provider"`
	Active   optional[bool]   `json:"active"`
}

// apply changes d as the patch says.
func (dp devicePatch) apply(d *points.Device) error {
	if pt, ok, err := dp.Point.value("point"); err != nil {
		return err
	} else if ok {
		if err := checkIdent("point", pt); err != nil {
			return err
		}
		d.Point = pt
	}
	if dp.Provider.set {
		if err := checkProvider(dp.Provider.v); err != nil {
			return err
		}
		d.Provider = dp.Provider.v // "" when null
	}
	if v, ok, err := dp.Active.value("active"); err != nil {
		return err
	} else if ok {
		d.Active = v
	}
	return nil
}

// handleUpdateDevice serves PATCH /api/devices/{id}/ (manage_devices on
// its point, and on the new one when it moves). As for points, accounts
// applies the patch to the locked row.
func (a *API) handleUpdateDevice(w http.ResponseWriter, r *http.Request) error {
	var patch devicePatch
	id, err := jsonCall(w, r, "id", &patch)
	if err != nil {
		return err
	}
	d, err := a.acc.PatchDevice(r.Context(), principal(r), id, patch.apply)
	if err != nil {
		if errors.Is(err, accounts.ErrNotFound) && patch.Point.set {
			return fromAccounts(err, paramInMessage(err, "id", [2]string{"point", "point"}))
		}
		return fromAccounts(err, "id")
	}
	writeJSON(w, http.StatusOK, toDeviceJSON(d))
	return nil
}

// handleRemoveDevice serves DELETE /api/devices/{id}/ (manage_devices).
func (a *API) handleRemoveDevice(w http.ResponseWriter, r *http.Request) error {
	id, err := pathParam(r, "id")
	if err != nil {
		return err
	}
	if err := noParams(r); err != nil {
		return err
	}
	if err := a.acc.RemoveDevice(r.Context(), principal(r), id); err != nil {
		return fromAccounts(err, "id")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
