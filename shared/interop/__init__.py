"""The hospital's languages: code mappings (codes), HL7 v2 (hl7v2) and FHIR R4 (fhir).

Every door turns its message into the service's result documents and calls shared.intake.submit_results:
no door has clinical rules of its own.
"""
