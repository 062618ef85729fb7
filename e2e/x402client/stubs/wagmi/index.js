// Never loaded: see ../../README.md ("Why wagmi is stubbed").
throw new Error("wagmi stub: x402's client code was not expected to import wagmi");
