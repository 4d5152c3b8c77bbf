CREATE TABLE IF NOT EXISTS "Patient" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "recordId" TEXT NOT NULL,
  "ssn" TEXT NOT NULL,
  "ssnOfRecord" TEXT NOT NULL,
  "name" TEXT NOT NULL,
  "note" TEXT,
  "vitals" TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS "Patient_recordId_key" ON "Patient"("recordId");
CREATE UNIQUE INDEX IF NOT EXISTS "Patient_tenantId_ssn_key" ON "Patient"("tenantId", "ssn");
CREATE TABLE IF NOT EXISTS "KmsDataKey" (
  "id" TEXT PRIMARY KEY,
  "kmsKeyId" TEXT NOT NULL,
  "wrappedKey" BYTEA NOT NULL,
  "encryptionContext" TEXT NOT NULL,
  "purpose" TEXT NOT NULL,
  "createdAt" BIGINT NOT NULL
);
