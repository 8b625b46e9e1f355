"""The MLLP listener: HL7 v2 over TCP (HL7 v2.5.1 Appendix C, Minimal Lower Layer Protocol), for interface
engines that do not speak HTTP. ``python -m services.mllp``; every message is handled by the function
POST /v1/hl7v2 uses (shared.interop.hl7v2.handle_message). See services/mllp/server.py.
"""
