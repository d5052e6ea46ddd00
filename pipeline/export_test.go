package pipeline

// Internals the external tests reach.
var (
	AdminClient = adminClient
	Describe    = describe
)
