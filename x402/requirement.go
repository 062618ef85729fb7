package x402

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"

	"github.com/shopspring/decimal"
)

// Requirement is the version-neutral form of one way to pay: what the
// server asks for. It renders into either generation's wire shape with V1
// and V2; the server's Requirement (never the client's copy) is what goes
// to the facilitator.
type Requirement struct {
	// Scheme is the payment scheme, "exact".
	Scheme string
	// Network is the CAIP-2 network identifier.
	Network string
	// Amount is the required amount in atomic units, as a decimal string.
	Amount string
	// Asset is the token contract address.
	Asset string
	// PayTo is the recipient address.
	PayTo string
	// MaxTimeoutSeconds bounds the time the payment may take.
	MaxTimeoutSeconds int
	// Extra is scheme-specific data: the token's EIP-712 name and version.
	Extra map[string]any
	// Resource describes the protected resource.
	Resource ResourceInfo
	// OutputSchema is the optional version 1 outputSchema.
	OutputSchema json.RawMessage
}

// RequirementParams are the inputs of NewRequirement.
type RequirementParams struct {
	// Network is a CAIP-2 identifier or version 1 name from the network
	// table; empty means DefaultNetwork.
	Network string
	// Price is the price in USD, an exact decimal; the network's USDC is
	// taken at par, so 0.01 becomes "10000" atomic units.
	Price decimal.Decimal
	// PayTo is the recipient address (0x and 40 hex digits).
	PayTo string
	// Resource is the request URL (see RequestURL).
	Resource string
	// Description is a human-readable description of the resource.
	Description string
	// MimeType is the MIME type of the paid response.
	MimeType string
	// MaxTimeoutSeconds bounds the payment; zero means
	// DefaultMaxTimeoutSeconds.
	MaxTimeoutSeconds int
	// OutputSchema is an optional version 1 outputSchema.
	OutputSchema json.RawMessage
}

// NewRequirement builds the exact-scheme requirement for a price in USDC on
// a known network. It wraps ErrUnknownNetwork, ErrInvalidPrice or
// ErrInvalidRequirement when the params cannot make a valid requirement.
func NewRequirement(p RequirementParams) (Requirement, error) {
	name := p.Network
	if strings.TrimSpace(name) == "" {
		name = DefaultNetwork
	}
	nw, err := LookupNetwork(name)
	if err != nil {
		return Requirement{}, err
	}
	amount, err := ToAtomicUnits(p.Price, nw.USDC.Decimals)
	if err != nil {
		return Requirement{}, err
	}
	timeout := p.MaxTimeoutSeconds
	if timeout == 0 {
		timeout = DefaultMaxTimeoutSeconds
	}
	r := Requirement{
		Scheme:            SchemeExact,
		Network:           nw.ID,
		Amount:            amount,
		Asset:             nw.USDC.Address,
		PayTo:             strings.TrimSpace(p.PayTo),
		MaxTimeoutSeconds: timeout,
		Extra:             nw.USDC.Extra(),
		Resource: ResourceInfo{
			URL:         p.Resource,
			Description: p.Description,
			MimeType:    p.MimeType,
		},
		OutputSchema: p.OutputSchema,
	}
	if err := r.Validate(); err != nil {
		return Requirement{}, err
	}
	return r, nil
}

// Validate checks that the requirement is one this package can take
// payment for: a well-formed scheme name, an EVM network, a positive amount, hex
// addresses, a positive timeout. Errors wrap ErrInvalidRequirement.
func (r Requirement) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidRequirement, fmt.Sprintf(format, args...))
	}
	if !validSchemeName(r.Scheme) {
		return bad("unsupported scheme %q", r.Scheme)
	}
	if _, ok := EVMChainID(r.Network); !ok {
		return bad("unsupported network %q", r.Network)
	}
	if n, ok := parseUint256(r.Amount); !ok || n.Sign() == 0 {
		return bad("amount %q is not a positive integer", r.Amount)
	}
	if !isHexAddress(r.Asset) {
		return bad("asset %q is not an address", r.Asset)
	}
	if !isHexAddress(r.PayTo) {
		return bad("payTo %q is not an address", r.PayTo)
	}
	if r.MaxTimeoutSeconds <= 0 {
		return bad("maxTimeoutSeconds %d is not positive", r.MaxTimeoutSeconds)
	}
	if len(r.OutputSchema) > 0 && !json.Valid(r.OutputSchema) {
		return bad("outputSchema is not valid JSON")
	}
	return nil
}

// V2 renders the requirement in the version 2 wire shape.
func (r Requirement) V2() PaymentRequirements {
	return PaymentRequirements{
		Scheme:            r.Scheme,
		Network:           NormalizeNetwork(r.Network),
		Amount:            r.Amount,
		Asset:             r.Asset,
		PayTo:             r.PayTo,
		MaxTimeoutSeconds: r.MaxTimeoutSeconds,
		Extra:             maps.Clone(r.Extra),
	}
}

// V1 renders the requirement in the version 1 wire shape, with the
// version 1 network name and the resource fields inlined.
func (r Requirement) V1() PaymentRequirementsV1 {
	return PaymentRequirementsV1{
		Scheme:            r.Scheme,
		Network:           V1NetworkName(r.Network),
		MaxAmountRequired: r.Amount,
		Resource:          r.Resource.URL,
		Description:       r.Resource.Description,
		MimeType:          r.Resource.MimeType,
		OutputSchema:      r.OutputSchema,
		PayTo:             r.PayTo,
		MaxTimeoutSeconds: r.MaxTimeoutSeconds,
		Asset:             r.Asset,
		Extra:             maps.Clone(r.Extra),
	}
}

// ForVersion renders the requirement as JSON in the given protocol
// version's shape, as sent to a facilitator.
func (r Requirement) ForVersion(version int) ([]byte, error) {
	if version == Version1 {
		return marshalJSON(r.V1())
	}
	return marshalJSON(r.V2())
}

// ExtraString returns a string value of Extra, or "".
func (r Requirement) ExtraString(key string) string {
	s, _ := r.Extra[key].(string)
	return s
}

// RequirementFromV2 converts a version 2 requirement (with the resource of
// its envelope) to the neutral form, normalising the network.
func RequirementFromV2(pr PaymentRequirements, resource ResourceInfo) Requirement {
	return Requirement{
		Scheme:            pr.Scheme,
		Network:           NormalizeNetwork(pr.Network),
		Amount:            pr.Amount,
		Asset:             pr.Asset,
		PayTo:             pr.PayTo,
		MaxTimeoutSeconds: pr.MaxTimeoutSeconds,
		Extra:             pr.Extra,
		Resource:          resource,
	}
}

// RequirementFromV1 converts a version 1 requirement to the neutral form,
// normalising the network to CAIP-2.
func RequirementFromV1(pr PaymentRequirementsV1) Requirement {
	return Requirement{
		Scheme:            pr.Scheme,
		Network:           NormalizeNetwork(pr.Network),
		Amount:            pr.MaxAmountRequired,
		Asset:             pr.Asset,
		PayTo:             pr.PayTo,
		MaxTimeoutSeconds: pr.MaxTimeoutSeconds,
		Extra:             pr.Extra,
		Resource: ResourceInfo{
			URL:         pr.Resource,
			Description: pr.Description,
			MimeType:    pr.MimeType,
		},
		OutputSchema: pr.OutputSchema,
	}
}

// RequestURL reconstructs the absolute URL of an incoming request, for use
// as a requirement's resource: scheme from the connection (https when TLS),
// the Host header, and the request URI as received. It does not consult
// forwarding headers; a deployment behind a trusted proxy builds the URL
// itself.
func RequestURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	uri := "/"
	if r.URL != nil {
		uri = r.URL.RequestURI()
	}
	return printableURL(scheme + "://" + host + uri)
}

// printableURL percent-encodes every byte outside printable ASCII, so that
// a resource URL is always valid UTF-8 (a raw \xff in a query would
// otherwise make stores that insist on UTF-8 refuse the settlement's ledger
// entry after the money moved).
func printableURL(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// isHexAddress reports whether s is 0x followed by 40 hex digits.
func isHexAddress(s string) bool {
	return isHexString(s, 40)
}

// isHexString reports whether s is 0x (or 0X) followed by exactly n hex
// digits.
func isHexString(s string, n int) bool {
	if len(s) != n+2 || (s[:2] != "0x" && s[:2] != "0X") {
		return false
	}
	return isHexDigits(s[2:])
}

func isHexDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// sameHex compares two hex strings case-insensitively (addresses in
// EIP-55 checksum and lower case are the same address).
func sameHex(a, b string) bool {
	return strings.EqualFold(a, b)
}

// marshalJSON encodes v without HTML escaping (so a resource URL keeps its
// '&') and without a trailing newline.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
