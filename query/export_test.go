package query

import "github.com/go-chi/chi/v5"

// OpenAPI returns the document the API serves, for the external tests.
func (a *API) OpenAPI() []byte { return a.openapi }

// Routes returns the API's router, for chi.Walk in the external tests.
func (a *API) Routes() chi.Routes { return a.mux }
