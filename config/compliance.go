package config

// Compliance configures what the compliance sources and configs share: the
// key that encrypts the regulators' credentials stored in
// compliance_configs.
type Compliance struct {
	// CredentialsKey is the AES-256 key, base64 (standard encoding, 32
	// bytes), that encrypts every credential stored in compliance_configs.
	// Set it from the environment (STACKVPS_COMPLIANCE_CREDENTIALS_KEY),
	// never in a file under version control. Empty: configs with
	// credentials cannot be created or submitted.
	CredentialsKey Secret `yaml:"credentials_key"`
}

func defaultCompliance() Compliance { return Compliance{} }

func (c Compliance) validate(p *problems) {}
