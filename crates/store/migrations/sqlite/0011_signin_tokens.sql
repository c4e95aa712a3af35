-- A token minted by the federated MDM sign-in page: it stands for the account that signed in
-- (NULL for tokens an administrator made for one device).
ALTER TABLE bootstrap_tokens ADD COLUMN account TEXT;
