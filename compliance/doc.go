// Package compliance is the domain of reporting water extraction to Chile's
// regulators: the sources (regulator endpoints), the per-point params,
// sealed credentials, the slot schedule, the formatting of values and the
// protocol clients that send one slot and classify the answer. It holds no
// database code (see compliance/store) and no scheduling loop (the submit
// stage).
//
// The full description of the model, the defaults and which of them are
// UNCONFIRMED follows in a later commit.
package compliance
