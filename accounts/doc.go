// Package accounts is Stack VPS's security layer: users, API tokens, who may
// do what on which catchment point (point_owners), who is told what about it
// (point_notifications), and the point and device changes made on a user's
// behalf. Every change is written to audit_log (package audit) in the same
// transaction as the change itself.
//
// # Principals
//
// A Principal is who acts: a user authenticated by an API token
// (Authenticate), or the system (System, e.g. the command line, which acts
// as an administrator). Every method that reads or changes something on
// someone's behalf takes the Principal first after the context; the zero
// Principal is refused with ErrUnauthenticated.
//
// # Authorization
//
// Users with role admin may do everything. Other users act only on the
// points they have a relation to in point_owners — PRIMARY, SECONDARY or
// ADMINISTRATOR — and only as far as its permissions allow (see
// DefaultPermissions). A point a user cannot read does not exist for them:
// every method answers ErrNotFound for it, exactly as for a point that does
// not exist, never ErrForbidden. ErrForbidden means "you can see it, but you
// may not do this".
//
// # Tokens
//
// A token is "svps_" followed by 43 base62 characters: 32 bytes from a
// cryptographic random source. Only its SHA-256 is stored, with the first 8
// characters after "svps_" as a prefix for listings and lookup. A fast hash
// is right here: bcrypt and its kin make guessing a low-entropy password
// slow, but no speed of hashing makes 256 random bits guessable, so a slow
// hash would only add latency to every API request.
//
// Store is safe for concurrent use.
package accounts
